// What every gateway shares, whatever the device protocol: THE node table, the liveness sweep, the metrics and
// health endpoint, the broker link, replay on reconnect, the status reports and the broker's actions
// (status-report.ts, actions.ts), and the routing of writes to the protocol adapter.
// A gateway is a ProtocolAdapter plugged into this core (adapter.ts); the adapter reports node events with
// add / update / reset / nodeOut and the core drives it with start / stop / write / discover / forget.
// The core also runs without an adapter (tests of the broker link): writes then go to onWrite's handler, actions
// to onAction's.
import type { Logger } from '../../services/common/log.ts';
import { Metrics } from '../../services/common/metrics.ts';
import { ErrorCode } from '../../services/protocol/errors.ts';
import type {
  BrError,
  BrokerToGatewayMessage,
  GatewayMessage,
  Json,
  OutReason,
} from '../../services/protocol/messages.ts';
import type { ForgetReason, ProtocolAdapter, WriteOutcome } from './adapter.ts';
import { coreActions, runAction, type ActionHandler } from './actions.ts';
import { BrokerLink, type BrokerLinkOptions } from './broker-link.ts';
import { BrokerSync } from './broker-sync.ts';
import { type HealthReport, HttpEndpoint, type HttpEndpointOptions } from '../../services/common/http-endpoint.ts';
import { type AddOptions, type GatewayNode, NodeTable, type Refusal } from './node-table.ts';
import { CoreCounters, type CoreStats } from './stats.ts';
import { gatewayVersion, STATUS_DEFAULTS, StatusReporter } from './status-report.ts';
import { ACTION_NAMES, type BrAction } from '../../services/protocol/gateway-reports.ts';
// [console] console requests for the nodes (issue 12): relayed by an adapter that can (WebSocket), else refused
import { type ExecRequestFrame, exitOf } from '../../services/protocol/console-messages.ts';
import { encode } from '../../services/protocol/frames.ts';
import { KeyCheck, type KeyCheckOptions } from './key-check.ts'; // [accounts]

export type { WriteOutcome } from './adapter.ts';
export type { AddOptions, Refusal } from './node-table.ts';

/** The bare core's side of a write (no adapter): deliver `payload` to the node's resource. */
export type WriteHandler = (uid: string, endpoint: string, payload: Json) => Promise<WriteOutcome>;

/** The liveness policy: one sweep for all nodes; a node silent for timeoutMs goes out with reason timeout. */
export interface LivenessPolicy {
  timeoutMs: number;
  /** How often the sweep runs (an out comes at most this late); the adapter's tick() runs on it too. */
  sweepMs: number;
}

export interface GatewayCoreOptions extends Omit<BrokerLinkOptions, 'onOpen' | 'onMessage' | 'onClose' | 'token'> {
  /** [accounts] Bounds of the device key checks asked of the broker (key-check.ts KEY_CHECK_DEFAULTS). */
  keyCheck?: Partial<KeyCheckOptions>;
  /** The protocol name; taken from the adapter when one is given. */
  protocol?: string;
  /** The broker token. */
  token?: () => Promise<string>;
  /** Called once by start() to make the token function: a key file that cannot be read fails start-up. */
  tokenSource?: () => () => Promise<string>;
  /** Bound on the `out`s remembered while the broker is unreachable (sent on reconnect). */
  maxPendingOuts?: number;
  /** Told about every `error` frame from the broker, after the core has dropped the node it names. */
  onBrokerError?: (msg: BrError) => void;
  /** Most nodes this gateway holds; a new one beyond it is refused (logged once, counted). */
  maxNodes?: number;
  /** Most resources one node may have; more are refused. */
  maxResourcesPerNode?: number;
  /** Without it, nodes never time out (the adapter reports every out itself). */
  liveness?: LivenessPolicy;
  /** The /metrics and /healthz endpoint; without it (or with port -1), none. */
  http?: HttpEndpointOptions;
  /** Checks a /metrics token (undefined = accepted, else the reason); without it every token is refused. */
  authorizeMetrics?: (token: string | undefined) => Promise<string | undefined>;
  /** Prefix of the gateway's metric names, e.g. `mycelium_coap_`. */
  metricsPrefix?: string;
  /** --status-interval in milliseconds: how often the status report goes to the broker (and on every connect). */
  statusIntervalMs?: number;
  /** The loggers `set-log-level` sets besides the core's (a pino child keeps its own level). */
  loggers?: Logger[];
  /** Where a core without an adapter says it listens (inventory); an adapter's listen() comes first. */
  listen?: () => string[];
}

export const CORE_DEFAULTS = { maxNodes: 100_000, maxResourcesPerNode: 64, maxPendingOuts: 100_000 } as const;

/** A gateway's /healthz: the transport and the broker link, both needed to serve its nodes. */
export interface GatewayHealth extends HealthReport {
  protocol: string;
  transport: 'up' | 'down';
  broker: 'connected' | 'disconnected';
  nodes: number;
}

export class GatewayCore<S = undefined> {
  readonly link: BrokerLink;
  /** [accounts] Device API keys, checked through the broker link (protocols that take keys use it). */
  readonly keys: KeyCheck;
  /** The gateway's metrics: the core's series, and the adapter's, which it adds to this registry. */
  readonly metrics: Metrics;
  private readonly table: NodeTable<S>;
  private readonly sync: BrokerSync<S>;
  private adapter?: ProtocolAdapter<S>;
  private writeHandler: WriteHandler = async () => ({ result: 'error', reason: 'gateway cannot write' });
  private readonly log: Logger;
  private readonly options: GatewayCoreOptions;
  private readonly http?: HttpEndpoint;
  private readonly counters: CoreCounters;
  /** Refusals already logged: a cap hit is logged once per reason, then only counted. */
  private readonly logged = new Set<Refusal>();
  private token?: () => Promise<string>;
  private readonly reporter: StatusReporter;
  private actions: ActionHandler;
  private sweepTimer?: NodeJS.Timeout;
  /** [console] Where console requests go; without one they are refused. */
  private execHandler?: (msg: ExecRequestFrame) => void;
  private running = false;
  private stopping?: Promise<void>;

  constructor(options: GatewayCoreOptions) {
    this.options = options;
    this.log = options.log;
    this.token = options.token;
    const limits = {
      maxNodes: options.maxNodes ?? CORE_DEFAULTS.maxNodes,
      maxResourcesPerNode: options.maxResourcesPerNode ?? CORE_DEFAULTS.maxResourcesPerNode,
    };
    this.table = new NodeTable<S>(limits, (reason, uid) => this.refuse(reason, uid));
    this.link = new BrokerLink({
      ...options,
      token: () => (this.token === undefined ? Promise.reject(new Error('gateway not started')) : this.token()),
      onOpen: () => this.onLinkOpen(),
      onMessage: (m) => this.onBrokerMessage(m),
      onClose: () => this.keys.linkDown(), // [accounts]
    });
    this.keys = new KeyCheck(this.link, this.log, options.keyCheck); // [accounts]
    this.sync = new BrokerSync<S>(
      this.link,
      () => this.table.values(),
      () => this.protocol,
      this.log,
      options.maxPendingOuts ?? CORE_DEFAULTS.maxPendingOuts,
    );
    this.metrics = new Metrics(options.metricsPrefix ?? 'mycelium_gateway_');
    this.counters = new CoreCounters(this.metrics, () => this.table.size, this.link);
    // [accounts]
    this.metrics.gauge('key_checks_pending', 'device key checks waiting for the broker', () => this.keys.pendingCount);
    this.metrics.gauge('key_cache_entries', 'device key answers cached (by SHA-256)', () => this.keys.cacheSize);
    if (options.http !== undefined) {
      this.http = new HttpEndpoint(options.http, {
        metrics: () => this.metrics.scrape(),
        health: () => this.health(),
        authorize: options.authorizeMetrics ?? (async () => 'no-key'),
        onRefused: (reason) => this.noteError(reason),
        log: this.log,
      });
    }
    this.reporter = new StatusReporter({
      stats: () => this.stats(),
      inventory: {
        protocol: () => this.protocol,
        version: gatewayVersion(),
        startedAt: Date.now(),
        actions: () => [...ACTION_NAMES],
        listen: () => this.adapter?.listen?.() ?? options.listen?.() ?? [],
      },
      intervalMs: options.statusIntervalMs ?? STATUS_DEFAULTS.intervalMs,
      send: (frame) => this.link.send(frame),
      log: this.log,
    });
    this.actions = coreActions<S>({
      node: (uid) => this.table.get(uid),
      nodes: () => this.table.values(),
      health: () => this.adapter?.health() ?? { up: true },
      discoverer: () => {
        const adapter = this.adapter;
        return adapter === undefined ? undefined : (node) => adapter.discover(node);
      },
      drop: (node, why) => this.drop(node, why),
      loggers: () => [this.log, ...(options.loggers ?? [])],
    });
  }

  /** Plugs the protocol adapter in (once, from the gateway's constructor). */
  use(adapter: ProtocolAdapter<S>): void {
    if (this.adapter !== undefined) throw new Error('the gateway core has an adapter already');
    this.adapter = adapter;
  }

  /** The protocol name the broker and the dashboard show: the adapter's, or the option's for a bare core. */
  get protocol(): string {
    return this.adapter?.protocol ?? this.options.protocol ?? 'unknown';
  }

  /** Adapter transport, then the HTTP endpoint, the broker link and the sweep. A failure releases what started. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      if (this.options.tokenSource !== undefined) this.token = this.options.tokenSource();
      await this.adapter?.start();
      await this.http?.start();
      await this.link.start();
      this.reporter.start();
    } catch (err) {
      await this.shutdown().catch(() => undefined);
      throw err;
    }
    const liveness = this.options.liveness;
    if (liveness !== undefined || this.adapter?.tick !== undefined) {
      this.sweepTimer = setInterval(() => this.sweep(), liveness?.sweepMs ?? 1000);
      this.sweepTimer.unref();
    }
  }

  /**
   * The broker link closes first, on purpose: the nodes are not reported `out`, so the broker keeps them online
   * for its grace period, and a gateway that restarts within it causes clients no out/new flap. Then the
   * adapter's transport, then the HTTP endpoint. Safe to call twice.
   */
  stop(): Promise<void> {
    if (!this.running) return Promise.resolve();
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  /** True from stop() on: adapters report nothing out while the gateway shuts down. */
  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.sweepTimer);
    this.reporter.stop();
    await this.link.stop();
    this.keys.stop(); // [accounts]
    await this.adapter?.stop();
    await this.http?.stop();
  }

  /** The writes of a core without an adapter. */
  onWrite(handler: WriteHandler): void {
    this.writeHandler = handler;
  }

  /** The actions of a core without an adapter (tests of the broker side), instead of the node table's. */
  onAction(handler: ActionHandler): void {
    this.actions = handler;
  }

  /** [console] Console requests from the broker (exec, exec-cancel, pty-*) go to `handler` (the adapter's relay). */
  onExec(handler: (msg: ExecRequestFrame) => void): void {
    this.execHandler = handler;
  }

  /** [console] Sends a console answer (exec-output, exec-exit) to the broker; false when the link is down. */
  sendToBroker(frame: GatewayMessage): boolean {
    const text = encode(frame);
    return text !== undefined && this.link.send(text);
  }

  /** Port of the /metrics and /healthz endpoint; undefined when off or not started. */
  get httpPort(): number | undefined {
    return this.http?.port;
  }

  get size(): number {
    return this.table.size;
  }

  has(uid: string): boolean {
    return this.table.has(uid);
  }

  node(uid: string): GatewayNode<S> | undefined {
    return this.table.get(uid);
  }

  nodes(): IterableIterator<GatewayNode<S>> {
    return this.table.values();
  }

  uids(): IterableIterator<string> {
    return this.table.uids();
  }

  resources(uid: string): Readonly<Record<string, Json>> | undefined {
    return this.table.get(uid)?.resources;
  }

  // ------------------------------------------------------------------------------------------------
  // Node events, reported by the adapter

  /**
   * A node appeared, with the adapter's state for it. Announcing a known uid again replaces its resources and
   * state (the broker sees no flap). `proof: 'token'` when the node proved its uid with a token. Returns the
   * node, or why it was refused: a uid or resource name that breaks the identifier rule, a value nested too
   * deep, or a cap reached. Nothing refused leaves the gateway.
   */
  add(uid: string, state: S, options: AddOptions = {}): GatewayNode<S> | Refusal {
    const node = this.table.admit(uid, state, options);
    if (typeof node !== 'string') this.sync.announce(node);
    return node;
  }

  /** add() for a core without an adapter state; true when accepted. */
  nodeNew(uid: string, resources: Record<string, Json> = {}, proof?: 'token'): boolean {
    return typeof this.add(uid, undefined as S, { resources, proof }) !== 'string';
  }

  /** A value of a known node (also a sign of life). Undefined when accepted, else why it was refused. */
  update(uid: string, endpoint: string, data: Json): Refusal | undefined {
    const refusal = this.table.setValue(uid, endpoint, data);
    if (refusal === undefined) this.sync.update(uid, endpoint, data);
    return refusal;
  }

  /** update(); true when accepted. */
  nodeUpdate(uid: string, endpoint: string, data: Json): boolean {
    return this.update(uid, endpoint, data) === undefined;
  }

  /** The node rebooted: forget its values; discovery will report them again. */
  nodeReset(uid: string): void {
    if (this.table.clearValues(uid)) this.sync.reset(uid);
  }

  /** The adapter saw the node go (its socket closed...): `out` to the broker, or remembered until reconnect. */
  nodeOut(uid: string, reason: OutReason): void {
    if (!this.table.delete(uid)) return;
    this.counters.outs(reason).inc();
    this.sync.out(uid, reason);
  }

  /** Forgets a node without telling the broker (it refused the node, or the adapter dropped it). */
  forget(uid: string): void {
    this.table.delete(uid);
    this.sync.forget(uid);
  }

  /** Asks the adapter to discover every node again (its transport came back after an outage). */
  rediscoverAll(): void {
    const now = Date.now();
    for (const node of this.table.values()) {
      // The outage was the transport's, not the nodes': each gets a fresh liveness period.
      node.lastSeen = now;
      this.adapter?.discover(node);
    }
  }

  // ------------------------------------------------------------------------------------------------
  // Counters the adapter feeds, read by stats() (and, through the registry, by /metrics)

  /** A message from a node (any kind). */
  noteIn(): void {
    this.counters.in.inc();
  }

  /** A message sent to a node (a write, a discovery request, a probe). */
  noteOut(): void {
    this.counters.out.inc();
  }

  /** Something refused or failed, by kind (the adapter's reason labels). */
  noteError(kind: string): void {
    this.counters.error(kind);
  }

  /** Everything a status report needs, from one place. */
  stats(): CoreStats {
    return this.counters.snapshot({
      protocol: this.protocol,
      nodes: this.table.countByStatus(),
      brokerLinkConnected: this.link.connected,
      brokerLinkReconnects: Math.max(0, this.link.opened - 1),
      brokerLinkRenewals: this.link.renewals,
    });
  }

  /** ok when the adapter's transport and the broker link are up; else down, naming what is down. */
  health(): GatewayHealth {
    const transport = this.adapter?.health() ?? { up: true };
    const down: string[] = [];
    if (!transport.up) down.push(transport.detail ?? `${this.protocol} transport`);
    if (!this.link.connected) down.push(`broker link (${this.link.currentUrl})`);
    return {
      status: down.length === 0 ? 'ok' : 'down',
      protocol: this.protocol,
      transport: transport.up ? 'up' : 'down',
      broker: this.link.connected ? 'connected' : 'disconnected',
      nodes: this.table.size,
      down,
    };
  }

  // ------------------------------------------------------------------------------------------------
  // Liveness: one sweep over every node, so 50k nodes cost one timer, not 50k.

  private sweep(): void {
    const now = Date.now();
    this.adapter?.tick?.(now);
    const liveness = this.options.liveness;
    if (liveness === undefined) return;
    // While the adapter's transport is down, nodes cannot reach us: nobody times out for the gateway's outage.
    if (this.adapter !== undefined && !this.adapter.health().up) return;
    const deadline = now - liveness.timeoutMs;
    for (const node of this.table.values()) {
      if (node.lastSeen < deadline) this.drop(node, { reason: 'timeout' });
    }
  }

  /**
   * The core drops a node: the adapter lets it go; a timeout and an operator's forget are reported `out`, a broker
   * refusal is not.
   */
  private drop(node: GatewayNode<S>, why: ForgetReason): void {
    if (why.reason === 'timeout') {
      this.nodeOut(node.uid, 'timeout');
      this.log.debug({ uid: node.uid, silentMs: Date.now() - node.lastSeen }, 'node timed out');
    } else if (why.reason === 'removed') this.nodeOut(node.uid, 'removed');
    else this.forget(node.uid);
    this.adapter?.forget(node, why);
  }

  // ------------------------------------------------------------------------------------------------
  // Refusals and the broker's messages

  /** Counts (and logs once per reason) a refusal the adapter made on the core's behalf (a cap it saw coming). */
  noteRefusal(reason: Refusal, uid: string): void {
    this.refuse(reason, uid);
  }

  private refuse(reason: Refusal, uid: string): Refusal {
    this.counters.refusals(reason).inc();
    this.noteError(reason);
    if (!this.logged.has(reason)) {
      this.logged.add(reason);
      // JSON.stringify: the uid may hold anything a device sent; the log line must stay one line.
      this.log.warn(
        { reason, uid: JSON.stringify(uid.slice(0, 64)) },
        'node or value refused (logged once per reason)',
      );
    }
    return reason;
  }

  private onBrokerMessage(msg: BrokerToGatewayMessage): void {
    switch (msg.type) {
      case 'write':
        // write() catches the adapter's failures itself; this catch is for a failure to send the result.
        this.write(msg.id, msg.uid, msg.endpoint, msg.payload).catch((err: unknown) =>
          this.log.error({ err, id: msg.id }, 'write result could not be sent'),
        );
        return;
      case 'error': {
        this.log.warn({ code: msg.code, reason: msg.reason, uid: msg.uid }, 'broker reported an error');
        // A refused node is dropped so the next reconnect does not replay it (and get refused again).
        if (msg.uid !== undefined && msg.code !== ErrorCode.NotOwner) {
          const node = this.table.get(msg.uid);
          if (node !== undefined) {
            this.counters.refusedByBroker(msg.code).inc();
            this.drop(node, { reason: 'refused', code: msg.code });
          } else this.forget(msg.uid);
        }
        this.options.onBrokerError?.(msg);
        return;
      }
      // [accounts]
      case 'key-verified':
        return this.keys.answer(msg);
      case 'keys-revoked':
        return this.keys.revokedKeys(msg.keys);
      case 'action':
        this.action(msg).catch((err: unknown) => this.log.error({ err, id: msg.id }, 'action result not sent'));
        return;
      // [console]
      case 'exec':
      case 'exec-cancel':
      case 'pty-open':
      case 'pty-input':
      case 'pty-resize':
        if (this.execHandler !== undefined) return this.execHandler(msg);
        if (msg.type === 'exec' || msg.type === 'pty-open') {
          this.sendToBroker(exitOf(msg.id, 'refused', { reason: `${this.protocol} nodes have no console` }));
        }
        return;
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  private async write(id: string, uid: string, endpoint: string, payload: Json): Promise<void> {
    let outcome: WriteOutcome;
    const node = this.table.get(uid);
    if (node === undefined) {
      outcome = { result: 'error', reason: 'unknown-node' };
    } else {
      try {
        outcome =
          this.adapter === undefined
            ? await this.writeHandler(uid, endpoint, payload)
            : await this.adapter.write(node, endpoint, payload);
      } catch (err) {
        this.log.warn({ err, uid, endpoint }, 'write failed');
        outcome = { result: 'error', reason: (err as Error).message };
      }
      this.noteOut();
    }
    this.counters.writes(outcome.result).inc();
    if (outcome.result === 'error' || outcome.result === 'timeout') this.noteError(`write-${outcome.result}`);
    this.sync.result(id, outcome);
  }

  /** Every (re)connection: the inventory, the state of every node, then a status report (issue 11, item 7). */
  private onLinkOpen(): void {
    this.reporter.sendInventory();
    this.sync.replay();
    this.reporter.sendStatus();
  }

  private async action(msg: BrAction): Promise<void> {
    this.sync.send(await runAction(msg, this.actions, this.log));
  }
}
