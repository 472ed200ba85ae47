// The CoAP gateway: the gateway core (node table, liveness, metrics and health, broker link) with the CoAP
// adapter plugged in. This is the public class `mycelium coap-gateway` builds.
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { Logger } from '../../services/common/log.ts';
import { GatewayCore } from '../common/gateway-core.ts';
import { gatewayTokenSource } from '../common/options.ts';
import { checkMetricsToken, startTokenChecks, type TokenChecks } from '../../services/common/token-checks.ts';
import { defaultKeyFile } from '../../services/common/keys.ts';
import { CoapAdapter, PROTOCOL } from './adapter.ts';
import type { CoapContext } from './context.ts';
import type { CoapState } from './endpoint-index.ts';
import type { CoapGatewayConfig } from './options.ts';

export { PROTOCOL } from './adapter.ts';
export { PROBE_BYTES } from './codec.ts';

export interface CoapGatewayDeps {
  log: Logger;
  /** Broker token source; default: `--token` or a token minted from `--key-file`. */
  tokenSource?: () => Promise<string>;
}

export class CoapGateway {
  readonly core: GatewayCore<CoapState>;
  readonly adapter: CoapAdapter;
  readonly counters: CoapContext['counters'];
  private checks?: TokenChecks;
  /** Event-loop stalls are when the kernel's UDP receive buffer can overflow; worth watching. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });

  constructor(
    readonly config: CoapGatewayConfig,
    private readonly deps: CoapGatewayDeps,
  ) {
    const c = config;
    this.core = new GatewayCore<CoapState>({
      protocol: PROTOCOL,
      urls: c.brokerUrl,
      tokenSource: () => deps.tokenSource ?? gatewayTokenSource(c, 'coap'),
      log: deps.log,
      backoffInitialMs: c.backoffInitialMs,
      backoffMaxMs: c.backoffMaxMs,
      pingIntervalMs: c.brokerPingMs,
      maxNodes: c.maxNodes,
      maxResourcesPerNode: c.maxResourcesPerNode,
      liveness: { timeoutMs: c.maxTime * 1000, sweepMs: c.checkIntervalMs },
      http: { port: c.httpPort, host: c.httpHost, timeoutMs: c.httpTimeoutMs, publicMetrics: c.publicMetrics },
      authorizeMetrics: (token) => checkMetricsToken(this.checks, token),
      metricsPrefix: 'mycelium_coap_',
      statusIntervalMs: c.statusInterval * 1000,
    });
    this.adapter = new CoapAdapter(config, this.core, deps.log);
    this.core.use(this.adapter);
    this.counters = this.adapter.counters;
    const m = this.core.metrics;
    m.gauge('observations', 'active observations', () => this.adapter.observations.observing);
    m.gauge('polls', 'resources polled instead of observed', () => this.adapter.observations.polling);
    m.gauge('discovery_queue', 'nodes waiting for discovery', () => this.adapter.discovery.queued);
    m.gauge('event_loop_delay_max_seconds', 'longest event-loop stall since the previous scrape', () => {
      const max = this.loopDelay.max / 1e9;
      this.loopDelay.reset();
      return Number.isFinite(max) ? max : 0;
    });
  }

  /** The UDP port nodes post to (the real one when configured with 0). */
  get coapPort(): number {
    return this.adapter.transport.port ?? this.config.coapPort;
  }

  /** The metrics HTTP port, or undefined when off. */
  get httpPort(): number | undefined {
    return this.core.httpPort;
  }

  get nodeCount(): number {
    return this.core.size;
  }

  /** Where a node is currently addressed (for tests and the REST view). */
  nodeEndpoint(uid: string): { address: string; port: number } | undefined {
    const node = this.core.node(uid);
    return node ? this.adapter.target(node) : undefined;
  }

  /** Prometheus text exposition of the counters. */
  metrics(): ReturnType<GatewayCore['metrics']['render']> {
    return this.core.metrics.render();
  }

  async start(): Promise<void> {
    const c = this.config;
    // /metrics tokens are checked like the broker's (key, lifetimes, revocations); without a key only
    // --public-metrics serves them.
    if (c.httpPort >= 0 && !c.publicMetrics && this.checks === undefined) {
      this.checks = await startTokenChecks(c, { keyFile: c.keyFile ?? defaultKeyFile() }, this.deps.log, true);
    }
    this.loopDelay.enable();
    try {
      await this.core.start();
    } catch (err) {
      this.release();
      throw err;
    }
    this.deps.log.info({ port: this.coapPort, httpPort: this.httpPort }, 'CoAP gateway listening');
  }

  async stop(): Promise<void> {
    await this.core.stop();
    this.release();
  }

  private release(): void {
    this.loopDelay.disable();
    this.checks?.stop();
    this.checks = undefined;
  }
}
