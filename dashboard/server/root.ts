// dashboard/ in the checkout: the folder with vite.config.ts and the built page (dist/). Run from the sources
// this file sits in dashboard/server/; run from the compiled build in dist/dashboard/server/, where neither is.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const beside = resolve(here, '..');

export const DASHBOARD_ROOT = existsSync(join(beside, 'vite.config.ts'))
  ? beside
  : resolve(here, '..', '..', '..', 'dashboard');
