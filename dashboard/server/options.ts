import type { OptionTable } from '../../services/common/config.ts';

/** OpenStreetMap's tile server; its usage policy asks for attribution, which the map widget shows. */
export const DEFAULT_TILE_URL = 'https://tile.openstreetmap.org/{z}/{x}/{y}.png';

export const dashboardOptions = {
  port: { type: 'number', default: 8080, min: 0, description: 'HTTP port of the dashboard (0 = any free port)' },
  host: { type: 'string', default: '0.0.0.0', description: 'address to listen on' },
  brokerUrl: {
    type: 'string',
    default: 'ws://localhost:8000',
    // Not MYCELIUM_BROKER_URL: gateways use that for the broker as THEY reach it, often a different address.
    env: 'MYCELIUM_DASHBOARD_BROKER_URL',
    description: "the broker's WebSocket URL as the BROWSER reaches it (the page connects to <url>/ws)",
  },
  title: { type: 'string', default: 'Mycelium', description: 'title shown in the page header and the browser tab' },
  tileUrl: {
    type: 'string',
    default: DEFAULT_TILE_URL,
    description: 'map tile URL template ({z}/{x}/{y}); empty = coordinates only, no tiles',
  },
  distDir: {
    type: 'string',
    description: 'directory of the built page (default: dashboard/dist next to this file)',
  },
  autoBuild: {
    type: 'boolean',
    default: true,
    env: 'MYCELIUM_DASHBOARD_AUTO_BUILD',
    description: 'build the page with Vite on start when the build directory is missing',
  },
} as const satisfies OptionTable;
