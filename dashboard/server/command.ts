import type { CommandSpec } from '../../services/common/run.ts';
import { dashboardOptions } from './options.ts';
import { DashboardServer } from './server.ts';

export { DashboardServer } from './server.ts';
export { dashboardOptions } from './options.ts';

export const dashboardCommand: CommandSpec<typeof dashboardOptions> = {
  name: 'dashboard',
  summary: 'Serve the live dashboard page; the browser connects to the broker given by --broker-url.',
  options: dashboardOptions,
  build(config, log) {
    return new DashboardServer(config, { log });
  },
};
