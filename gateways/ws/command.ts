// `mycelium ws-gateway`: one gateway process, or with --workers N a primary that forks N workers sharing the
// port through node:cluster. One process may hold at most 20,000 open files on the target machine, and one
// event loop uses one core, so workers are how the gateway holds 50k nodes and uses both cores. Each worker
// is a gateway of its own towards the broker (`<gateway-id>-w<n>`), because the broker keys nodes by gateway.
import cluster, { type Worker } from 'node:cluster';
import { hostname } from 'node:os';
import type { Logger } from '../../services/common/log.ts';
import type { CommandSpec, Component } from '../../services/common/run.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import { wsGatewayOptions, type WsGatewayConfig } from './options.ts';
import { WsGateway } from './gateway.ts';

/** Tells a forked process which worker it is. */
const WORKER_ENV = 'MYCELIUM_WS_GATEWAY_WORKER';
/** A worker that dies is forked again after this long (not at once: a crash loop must not spin a core). */
export const WORKER_RESTART_DELAY_MS = 1000;
export const WORKER_STOP_LIMIT_MS = 4000;

export const wsGatewayCommand: CommandSpec<typeof wsGatewayOptions> = {
  name: 'ws-gateway',
  summary: 'Run the WebSocket gateway: nodes connect to ws://<host>:<port>/node and dial the broker at /gw.',
  options: wsGatewayOptions,
  build(config, log) {
    const baseId = config.gatewayId ?? `ws-${hostname()}`;
    const worker = process.env[WORKER_ENV];
    if (cluster.isWorker && worker !== undefined) {
      return new WsGateway({ ...config, gatewayId: `${baseId}-w${worker}` }, { log: log.child({ worker }) });
    }
    if (config.workers <= 1) return new WsGateway({ ...config, gatewayId: baseId }, { log });
    if (config.token) {
      throw new MyceliumError(
        ErrorCode.Config,
        '--workers needs a --key-file to mint one gateway identity per worker; a single --token cannot serve them all',
      );
    }
    return new WorkerPool(config, log);
  },
};

/** The primary of a multi-process gateway: forks the workers, restarts one that dies, stops them all. */
class WorkerPool implements Component {
  private readonly workers = new Map<number, Worker>();
  private stopping = false;

  constructor(
    private readonly config: WsGatewayConfig,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    // Workers run the same command line; the environment variable makes them build a gateway.
    cluster.setupPrimary({ exec: process.argv[1], args: process.argv.slice(2) });
    const ready: Promise<void>[] = [];
    for (let n = 1; n <= this.config.workers; n++) ready.push(this.fork(n));
    await Promise.all(ready);
    this.log.info({ workers: this.config.workers, port: this.config.port }, 'ws gateway workers listening');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const exits = [...this.workers.values()].map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.isDead()) return resolve();
          w.once('exit', () => resolve());
          w.process.kill('SIGTERM');
          setTimeout(() => {
            w.process.kill('SIGKILL');
            resolve();
          }, WORKER_STOP_LIMIT_MS).unref();
        }),
    );
    await Promise.all(exits);
  }

  private fork(n: number): Promise<void> {
    const w = cluster.fork({ [WORKER_ENV]: String(n) });
    this.workers.set(n, w);
    w.on('exit', (code, signal) => {
      if (this.stopping) return;
      this.log.error({ worker: n, code, signal }, 'ws gateway worker died; restarting it');
      setTimeout(() => {
        this.fork(n).catch((err) => this.log.error({ err, worker: n }, 'cannot restart ws gateway worker'));
      }, WORKER_RESTART_DELAY_MS).unref();
    });
    return new Promise<void>((resolve) => {
      w.once('listening', () => resolve());
      w.once('exit', () => resolve());
    });
  }
}
