// The small HTTP server of a service that has no REST API of its own (the gateways, the history service): GET
// /metrics (Prometheus text) and GET /healthz (JSON), on --http-port and --http-host. /healthz needs no token (it
// says only what is up); /metrics needs a viewer, operator or admin token unless --public-metrics, as on the
// broker: counters reveal node counts.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import type { ConfigOf, OptionTable } from './config.ts';
import type { Logger } from './log.ts';
import { extractToken } from './tokens.ts';
import { pathOf } from './upgrade.ts';

/** A listen error as the operator should read it: which port, why, and the flag that chooses another. */
export function portError(err: NodeJS.ErrnoException, port: number, flag: string): Error {
  if (err.code === 'EADDRINUSE' || err.code === 'EACCES') {
    const what = err.code === 'EADDRINUSE' ? 'is already in use' : 'needs privileges';
    return new MyceliumError(ErrorCode.Config, `port ${port} ${what} (choose another with ${flag})`, { cause: err });
  }
  return err;
}

/** --http-port, --http-host, --http-timeout-ms and --public-metrics: the same in every service but the port. */
export function httpEndpointOptions<P extends number>(defaultPort: P) {
  return {
    httpPort: {
      type: 'number',
      default: defaultPort,
      min: -1,
      description: 'port of the GET /metrics and GET /healthz endpoint (0 = any free port, -1 = off)',
    },
    httpHost: { type: 'string', default: '127.0.0.1', description: 'address of the /metrics and /healthz endpoint' },
    httpTimeoutMs: {
      type: 'number',
      default: 10000,
      min: 10,
      description: 'time a connection to the /metrics port has to send its request (idle or slow: closed)',
    },
    publicMetrics: {
      type: 'boolean',
      default: false,
      description: 'serve /metrics without a token (default: a viewer, operator or admin token)',
    },
  } as const satisfies OptionTable;
}

export type HttpEndpointConfig = ConfigOf<ReturnType<typeof httpEndpointOptions>>;

export interface HttpEndpointOptions {
  /** -1: no HTTP server; 0: any free port. */
  port: number;
  host: string;
  /** A connection has this long to send its request; idle connections are closed after it too. */
  timeoutMs: number;
  publicMetrics: boolean;
}

/** What /healthz answers: 200 when `status` is ok, else 503; each service adds its own fields. */
export interface HealthReport {
  status: 'ok' | 'down';
  /** What is down, in words (empty when status is ok). */
  down: string[];
}

export interface HttpEndpointSources {
  /** The Prometheus text; may be async (a prom-client registry renders asynchronously). */
  metrics: () => string | Promise<string>;
  health: () => HealthReport;
  /** Checks a /metrics token: undefined when accepted, else why not. */
  authorize: (token: string | undefined) => Promise<string | undefined>;
  /** Counted by the owner: a refused /metrics request. */
  onRefused: (reason: string) => void;
  log: Logger;
}

export class HttpEndpoint {
  private server?: Server;

  constructor(
    private readonly options: HttpEndpointOptions,
    private readonly sources: HttpEndpointSources,
  ) {}

  /** The bound port; undefined when off or not started. */
  get port(): number | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : undefined;
  }

  async start(): Promise<void> {
    const { port, host, timeoutMs } = this.options;
    if (port < 0 || this.server !== undefined) return;
    // A connection that sends nothing, or its headers too slowly, is closed after timeoutMs; Node checks header
    // and request deadlines every connectionsCheckingInterval (30 s by default, hence set here).
    const server = createServer(
      {
        headersTimeout: timeoutMs,
        requestTimeout: timeoutMs,
        connectionsCheckingInterval: Math.max(10, Math.min(1000, timeoutMs / 2)),
      },
      (req, res) => {
        this.handle(req, res).catch((err: unknown) => {
          this.sources.log.error({ err }, 'HTTP endpoint failed');
          if (!res.headersSent) res.writeHead(500).end();
        });
      },
    );
    // Idle sockets (no 'timeout' listener on the server) are destroyed after this long.
    server.setTimeout(timeoutMs);
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => reject(portError(err, port, '--http-port'));
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined || !server.listening) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req);
    if (req.method !== 'GET' || (path !== '/healthz' && path !== '/metrics')) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'not-found', message: 'GET /metrics or GET /healthz' }));
      return;
    }
    if (path === '/healthz') {
      const report = this.sources.health();
      res.writeHead(report.status === 'ok' ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify(report));
      return;
    }
    if (!this.options.publicMetrics) {
      const refusal = await this.sources.authorize(extractToken(req.headers, undefined).token);
      if (refusal !== undefined) {
        this.sources.onRefused(`metrics-auth-${refusal}`);
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': `Bearer error="invalid_token", error_description="token ${refusal}"`,
        });
        res.end(JSON.stringify({ error: 'unauthorized', message: `token ${refusal}` }));
        return;
      }
    }
    const text = await this.sources.metrics();
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(text);
  }
}
