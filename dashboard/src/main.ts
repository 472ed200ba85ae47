import './styles.css';
import { App, type PageConfig } from './app.ts';

async function loadConfig(): Promise<PageConfig> {
  const fallback: PageConfig = { brokerUrl: `ws://${location.hostname}:8000`, title: 'Mycelium', tileUrl: '' };
  try {
    const res = await fetch('/config.json', { cache: 'no-store' });
    if (!res.ok) return fallback;
    const c: unknown = await res.json();
    if (typeof c !== 'object' || c === null) return fallback;
    const o = c as Record<string, unknown>;
    return {
      brokerUrl: typeof o.brokerUrl === 'string' ? o.brokerUrl : fallback.brokerUrl,
      title: typeof o.title === 'string' ? o.title : fallback.title,
      tileUrl: typeof o.tileUrl === 'string' ? o.tileUrl : '',
    };
  } catch {
    return fallback;
  }
}

const root = document.getElementById('app');
if (root) {
  const config = await loadConfig();
  new App(root, config).start();
}
