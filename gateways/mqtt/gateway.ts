// The MQTT gateway: the gateway core (node table, liveness, metrics and health, broker link) with the MQTT
// adapter plugged in. This is the public class `mycelium mqtt-gateway` builds.
import { defaultKeyFile } from '../../services/common/keys.ts';
import type { Logger } from '../../services/common/log.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import { GatewayCore } from '../common/gateway-core.ts';
import { gatewayTokenSource } from '../common/options.ts';
import {
  checkMetricsToken,
  type Revocations,
  startTokenChecks,
  withNodeKeys,
  type TokenChecks,
} from '../../services/common/token-checks.ts';
import { LIVENESS_SWEEP_MAX_MS, MqttAdapter, PROTOCOL } from './adapter.ts';
import type { MqttState } from './discovery.ts';
import type { MqttGatewayConfig } from './options.ts';

export { LIVENESS_SWEEP_MAX_MS, PACKET_OVERHEAD_BYTES, PROTOCOL } from './adapter.ts';

export interface MqttGatewayDeps {
  log: Logger;
  /** Token for the broker link; default: --token, or minted from --key-file. */
  tokenSource?: () => Promise<string>;
  /**
   * Revoked token ids: the embedded broker refuses them at CONNECT and ends sessions that use them. Default:
   * the RevocationList of --revocation-file (revoked.json beside --key-file), polled every --revocation-poll-ms.
   */
  revocations?: Revocations;
}

export class MqttGateway {
  readonly core: GatewayCore<MqttState>;
  readonly adapter: MqttAdapter;
  private checks?: TokenChecks;
  private readonly log: Logger;

  constructor(
    readonly config: MqttGatewayConfig,
    private readonly deps: MqttGatewayDeps,
  ) {
    this.log = deps.log;
    const maxTimeMs = config.maxTime * 1000;
    this.core = new GatewayCore<MqttState>({
      protocol: PROTOCOL,
      urls: config.brokerUrl,
      tokenSource: () => deps.tokenSource ?? gatewayTokenSource(config, 'mqtt'),
      log: deps.log.child({ component: 'broker-link' }),
      backoffInitialMs: config.backoffInitialMs,
      backoffMaxMs: config.backoffMaxMs,
      pingIntervalMs: config.brokerPingMs,
      maxNodes: config.maxNodes,
      maxResourcesPerNode: config.maxResourcesPerNode,
      liveness: { timeoutMs: maxTimeMs, sweepMs: Math.min(LIVENESS_SWEEP_MAX_MS, maxTimeMs / 4) },
      http: {
        port: config.httpPort,
        host: config.httpHost,
        timeoutMs: config.httpTimeoutMs,
        publicMetrics: config.publicMetrics,
      },
      authorizeMetrics: (token) => checkMetricsToken(this.checks, token),
      metricsPrefix: 'mycelium_mqtt_',
      statusIntervalMs: config.statusInterval * 1000,
      loggers: [deps.log],
    });
    this.adapter = new MqttAdapter(config, this.core, deps.log, () => this.checks);
    this.core.use(this.adapter);
  }

  /** Port of the embedded MQTT broker (0 when using an external one or not started). */
  get mqttPort(): number {
    return this.adapter.mqttPort;
  }

  /** Port of the /metrics and /healthz endpoint (0 when off or not started). */
  get httpPort(): number {
    return this.core.httpPort ?? 0;
  }

  /** Node ids currently held. */
  nodeIds(): string[] {
    return [...this.core.nodes()].map((n) => n.state.id);
  }

  /** Counters and gauges in Prometheus text format (the embedded broker's included). */
  metrics(): ReturnType<GatewayCore['metrics']['render']> {
    return this.core.metrics.render();
  }

  async start(): Promise<void> {
    const c = this.config;
    // Node tokens on the embedded broker, and /metrics tokens, are checked with --key-file's public half.
    const nodeTokens = !c.mqttUrl && !c.allowAnonymousNodes;
    const metricsTokens = c.httpPort >= 0 && !c.publicMetrics;
    if ((nodeTokens || metricsTokens) && this.checks === undefined) {
      const sources = { keyFile: c.keyFile ?? defaultKeyFile(), revocations: this.deps.revocations };
      try {
        const checks = await startTokenChecks(c, sources, this.log, !nodeTokens);
        // [accounts] Device API keys as the MQTT password, checked through the broker link.
        this.checks = nodeTokens ? withNodeKeys(checks, this.core.keys) : checks;
      } catch (err) {
        if (!nodeTokens) throw err;
        throw new MyceliumError(
          ErrorCode.Config,
          `the embedded MQTT broker checks node tokens with --key-file, but ${(err as Error).message}; ` +
            'or pass --allow-anonymous-nodes',
          { cause: err },
        );
      }
    }
    try {
      await this.core.start();
    } catch (err) {
      this.release();
      throw err;
    }
    this.log.info(
      { mqtt: this.adapter.description, mqttPort: this.mqttPort || undefined, httpPort: this.httpPort || undefined },
      'MQTT gateway started',
    );
  }

  async stop(): Promise<void> {
    await this.core.stop();
    this.release();
  }

  private release(): void {
    this.checks?.stop();
    this.checks = undefined;
  }
}
