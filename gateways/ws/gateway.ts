// The WebSocket gateway: the gateway core (node table, liveness, metrics and health, broker link) with the
// WebSocket adapter plugged in. This is the public class `mycelium ws-gateway` builds (once per worker).
import type { KeyObject } from 'node:crypto';
import { defaultKeyFile } from '../../services/common/keys.ts';
import type { Logger } from '../../services/common/log.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import { GatewayCore } from '../common/gateway-core.ts';
import { gatewayTokenSource } from '../common/options.ts';
import {
  checkMetricsToken,
  type Revocations,
  startTokenChecks,
  type TokenChecks,
  withNodeKeys,
} from '../../services/common/token-checks.ts';
import { MISSED_PINGS, SWEEP_STEPS, WsAdapter, WS_PROTOCOL } from './adapter.ts';
import type { NodeSession } from './node-session.ts';
import type { WsGatewayOptions } from './options.ts';

export { NODE_PATH, WS_PROTOCOL } from './adapter.ts';
export type { WsGatewayOptions } from './options.ts';

export interface WsGatewayDeps {
  log: Logger;
  /** Token for the broker link; default: `--token`, else minted from `--key-file`. */
  tokenSource?: () => Promise<string>;
  /** Verifies node (and /metrics) tokens; default: read from `--node-key-file` / `--key-file` at start. */
  publicKey?: KeyObject;
  /**
   * Revoked token ids: refused at the upgrade, and sessions closed (4401). Default: the RevocationList of
   * --revocation-file (revoked.json beside the node key), polled every --revocation-poll-ms.
   */
  revocations?: Revocations;
}

export class WsGateway {
  readonly core: GatewayCore<NodeSession>;
  readonly adapter: WsAdapter;
  private readonly log: Logger;
  private checks?: TokenChecks;

  constructor(
    readonly config: WsGatewayOptions,
    private readonly deps: WsGatewayDeps,
  ) {
    this.log = deps.log.child({ gateway: config.gatewayId ?? 'ws' });
    this.core = new GatewayCore<NodeSession>({
      protocol: WS_PROTOCOL,
      urls: config.brokerUrl,
      tokenSource: () => deps.tokenSource ?? gatewayTokenSource(config, 'ws'),
      log: this.log,
      backoffInitialMs: config.backoffInitialMs,
      backoffMaxMs: config.backoffMaxMs,
      pingIntervalMs: config.brokerPingMs,
      maxNodes: config.maxNodes,
      maxResourcesPerNode: config.maxResourcesPerNode,
      liveness: {
        timeoutMs: MISSED_PINGS * config.pingIntervalMs,
        sweepMs: Math.max(1, config.pingIntervalMs / SWEEP_STEPS),
      },
      http: {
        port: config.httpPort ?? -1,
        host: config.httpHost ?? '127.0.0.1',
        timeoutMs: config.httpTimeoutMs ?? 10_000,
        publicMetrics: config.publicMetrics ?? false,
      },
      authorizeMetrics: (token) => checkMetricsToken(this.checks, token),
      metricsPrefix: 'mycelium_ws_gateway_',
      statusIntervalMs: config.statusInterval * 1000,
    });
    this.adapter = new WsAdapter(config, this.core, this.log, () => this.checks);
    this.core.use(this.adapter);
  }

  /** The node port, once started (useful with `port: 0`). */
  get port(): number {
    return this.adapter.transport.port;
  }

  /** The /metrics and /healthz port; undefined when off or not started. */
  get httpPort(): number | undefined {
    return this.core.httpPort;
  }

  /** Counters and gauges in Prometheus text format. */
  metrics(): ReturnType<GatewayCore['metrics']['render']> {
    return this.core.metrics.render();
  }

  async start(): Promise<void> {
    if (this.checks === undefined) {
      const c = this.config;
      const keyFile = c.nodeKeyFile ?? c.keyFile ?? defaultKeyFile();
      const sources = { keyFile, publicKey: this.deps.publicKey, revocations: this.deps.revocations };
      try {
        // [accounts] Device API keys as the bearer token too, checked through the broker link.
        this.checks = withNodeKeys(await startTokenChecks(c, sources, this.log, c.allowAnonymousNodes), this.core.keys);
      } catch (err) {
        throw new MyceliumError(ErrorCode.Config, `cannot verify node tokens: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    try {
      await this.core.start();
    } catch (err) {
      this.release();
      throw err;
    }
  }

  /**
   * Closes the broker link, then every node with 1001. The link goes first on purpose: the nodes are not
   * reported `out`, so the broker keeps them online for its grace period, and a gateway that restarts within it
   * (its nodes reconnect) causes no out/new flap for clients. Safe to call twice.
   */
  async stop(): Promise<void> {
    await this.core.stop();
    this.release();
  }

  private release(): void {
    this.checks?.stop();
    this.checks = undefined;
  }
}
