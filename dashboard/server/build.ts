// Programmatic `vite build` of the page: for `mycelium dashboard` started from a fresh clone, and for tests,
// which build the current sources into a directory of their own.
import { join } from 'node:path';
import { DASHBOARD_ROOT } from './root.ts';

export async function buildDashboard(outDir?: string): Promise<void> {
  const { build } = await import('vite');
  await build({
    configFile: join(DASHBOARD_ROOT, 'vite.config.ts'),
    logLevel: 'warn',
    ...(outDir === undefined ? {} : { build: { outDir, emptyOutDir: true } }),
  });
}
