// The dashboard's HTTP service: serves the built page (dashboard/dist) with strict security headers and tells
// the page where the broker is through /config.json, so no inline script is ever needed (CSP script-src 'self').
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { extname, join, normalize, resolve, sep } from 'node:path';
import type { ConfigOf } from '../../services/common/config.ts';
import type { Logger } from '../../services/common/log.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import type { dashboardOptions } from './options.ts';
import { DASHBOARD_ROOT } from './root.ts';

export { DASHBOARD_ROOT };

export type DashboardConfig = Pick<ConfigOf<typeof dashboardOptions>, 'port' | 'host' | 'brokerUrl' | 'title'> &
  Partial<Pick<ConfigOf<typeof dashboardOptions>, 'tileUrl' | 'distDir' | 'autoBuild'>>;

export const DEFAULT_DIST_DIR = join(DASHBOARD_ROOT, 'dist');

/** What the page reads at start-up from /config.json. */
export interface PageConfig {
  brokerUrl: string;
  title: string;
  tileUrl: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.woff2': 'font/woff2',
};

/** Origin of a URL, or undefined when it does not parse. */
function originOf(url: string): string | undefined {
  try {
    const u = new URL(url.replace('{s}', 'a'));
    return u.origin === 'null' ? undefined : u.origin;
  } catch {
    return undefined;
  }
}

/** The Content-Security-Policy: nothing inline, connections only to this host and the broker. */
export function contentSecurityPolicy(config: Pick<PageConfig, 'brokerUrl' | 'tileUrl'>): string {
  const img = ["'self'", 'data:'];
  const tiles = config.tileUrl ? originOf(config.tileUrl) : undefined;
  if (tiles) img.push(tiles);
  const connect = ["'self'"];
  const broker = originOf(config.brokerUrl);
  if (broker) {
    connect.push(broker);
    // The page probes the broker's /healthz over HTTP to tell "refused token" from "broker unreachable".
    connect.push(broker.replace(/^ws(s?):/, 'http$1:'));
  }
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    `img-src ${img.join(' ')}`,
    `connect-src ${connect.join(' ')}`,
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** The URLs end up in the page and the CSP: refuse at start what the browser could not use. */
export function checkUrls(config: Pick<DashboardConfig, 'brokerUrl' | 'tileUrl'>): void {
  const problems: string[] = [];
  let broker: URL | undefined;
  try {
    broker = new URL(config.brokerUrl);
  } catch {
    problems.push(`--broker-url ${JSON.stringify(config.brokerUrl)} is not a URL`);
  }
  if (broker && broker.protocol !== 'ws:' && broker.protocol !== 'wss:') {
    problems.push(`--broker-url must start with ws:// or wss:// (got ${broker.protocol}//)`);
  }
  const tiles = config.tileUrl ?? '';
  if (tiles !== '') {
    if (!/^https?:\/\//.test(tiles) || originOf(tiles) === undefined) {
      problems.push(`--tile-url must be an http(s) URL template (got ${JSON.stringify(tiles)})`);
    } else if (!['{z}', '{x}', '{y}'].every((p) => tiles.includes(p))) {
      problems.push('--tile-url must contain {z}, {x} and {y}');
    }
  }
  if (problems.length > 0) throw new MyceliumError(ErrorCode.Config, problems.join('\n'));
}

export class DashboardServer {
  private server?: Server;
  private stopping?: Promise<void>;
  private readonly log: Logger;
  private readonly distDir: string;
  private readonly headers: Record<string, string>;
  private readonly pageConfig: string;

  constructor(
    readonly config: DashboardConfig,
    deps: { log: Logger },
  ) {
    this.log = deps.log;
    this.distDir = resolve(config.distDir ?? DEFAULT_DIST_DIR);
    const page: PageConfig = {
      brokerUrl: config.brokerUrl,
      title: config.title,
      tileUrl: config.tileUrl ?? '',
    };
    this.pageConfig = JSON.stringify(page);
    this.headers = {
      'Content-Security-Policy': contentSecurityPolicy(page),
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Permissions-Policy': 'camera=(), microphone=(), geolocation=()',
    };
  }

  /** The bound port, once started. */
  get port(): number {
    const addr = this.server?.address();
    return typeof addr === 'object' && addr !== null ? addr.port : 0;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.server) return;
    checkUrls(this.config);
    await this.ensureBuilt();
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        this.log.error({ err, url: req.url }, 'request failed');
        if (!res.headersSent) this.send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      });
    });
    this.server = server;
    await new Promise<void>((resolveListen, reject) => {
      server.once('error', reject);
      server.listen(this.config.port, this.config.host, () => {
        server.off('error', reject);
        resolveListen();
      });
    });
    this.log.info({ port: this.port, brokerUrl: this.config.brokerUrl }, 'dashboard listening');
  }

  /** Stops listening and closes idle keep-alive connections. Safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const server = this.server;
      if (!server) return;
      await new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      });
      this.log.info('dashboard stopped');
    })();
    return this.stopping;
  }

  /** A missing build is made with Vite (a fresh clone), or reported with the command that makes it. */
  private async ensureBuilt(): Promise<void> {
    if (existsSync(join(this.distDir, 'index.html'))) return;
    if (this.config.autoBuild === false || this.config.distDir !== undefined) {
      throw new MyceliumError(
        ErrorCode.Config,
        `the dashboard page is not built (no ${join(this.distDir, 'index.html')}); run \`npm run build:dashboard\``,
      );
    }
    this.log.info({ dir: this.distDir }, 'dashboard page not built yet; building it with Vite');
    const { buildDashboard } = await import('./build.ts');
    try {
      await buildDashboard();
    } catch (err) {
      throw new MyceliumError(
        ErrorCode.Config,
        `building the dashboard page failed (${(err as Error).message}); run \`npm run build:dashboard\` to see why`,
        { cause: err },
      );
    }
  }

  private send(res: ServerResponse, status: number, type: string, body: string | Buffer, extra = {}): void {
    res.writeHead(status, { ...this.headers, 'Content-Type': type, ...extra });
    res.end(body);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return this.send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { Allow: 'GET, HEAD' });
    }
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      return this.send(res, 400, 'text/plain; charset=utf-8', 'bad path\n');
    }
    if (path === '/config.json') {
      return this.send(res, 200, 'application/json; charset=utf-8', this.pageConfig, { 'Cache-Control': 'no-store' });
    }
    if (path === '/healthz') return this.send(res, 200, 'application/json; charset=utf-8', '{"status":"ok"}');
    if (path === '/' || path === '') path = '/index.html';
    // Resolve inside dist only: `..` and NUL never leave it.
    const file = normalize(join(this.distDir, path));
    if (path.includes('\0') || !file.startsWith(this.distDir + sep)) {
      return this.send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    }
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile()) return this.send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    const body = await readFile(file);
    // Vite puts content hashes in the names under /assets/, so those never change; index.html always may.
    const cache = path.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache';
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    res.writeHead(200, {
      ...this.headers,
      'Content-Type': type,
      'Cache-Control': cache,
      'Content-Length': body.length,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}
