// Programmatic `vite build` of the page, for `mycelium dashboard` started from a fresh clone.
import { join } from 'node:path';
import { DASHBOARD_ROOT } from './server.ts';

export async function buildDashboard(): Promise<void> {
  const { build } = await import('vite');
  await build({ configFile: join(DASHBOARD_ROOT, 'vite.config.ts'), logLevel: 'warn' });
}
