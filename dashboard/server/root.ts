// dashboard/ in the checkout: the folder with vite.config.ts and the built page (dist/), beside Mycelium's
// package.json whether the sources, the tsc build or the bundle runs (services/common/project-root.ts).
import { join } from 'node:path';
import { projectRoot } from '../../services/common/project-root.ts';

export const DASHBOARD_ROOT = join(projectRoot(), 'dashboard');
