// What every gateway shares, whatever the device protocol: the cache of its nodes, the broker link,
// replay on reconnect, and the dispatch of writes to the protocol binding.
// A protocol binding calls nodeNew / nodeUpdate / nodeReset / nodeOut and answers writes.
import type { Logger } from '../../services/common/log.ts';
import { ErrorCode } from '../../services/protocol/errors.ts';
import { encode, MAX_RESOURCES_PER_NODE } from '../../services/protocol/frames.ts';
import type {
  BrError,
  BrokerToGatewayMessage,
  GatewayMessage,
  Json,
  OutReason,
  WriteResult,
} from '../../services/protocol/messages.ts';
import { isIdentifier, valueTooDeep } from '../../services/protocol/schema.ts';
import { BrokerLink, type BrokerLinkOptions } from './broker-link.ts';
// [gw-reports] inventory, status reports and actions (issue 11, item 7): hooks marked [gw-reports] below.
import { type ActionHandler, runAction } from './actions.ts';
import { ACTION_NAMES, type BrAction } from '../../services/protocol/gateway-reports.ts';
import { GatewayStats, gatewayVersion, STATUS_DEFAULTS, StatusReporter } from './status-report.ts';

export interface WriteOutcome {
  result: WriteResult;
  reason?: string;
}

/** The protocol binding's side of a write: deliver `payload` to the node's resource. */
export type WriteHandler = (uid: string, endpoint: string, payload: Json) => Promise<WriteOutcome>;

interface CachedNode {
  protocol: string;
  /** Null-prototype: keyed by names a device chose. */
  resources: Record<string, Json>;
  resourceCount: number;
  proof?: 'token';
}

/** Why the core refused a node or a value before it left the gateway (counted by the adapter if it likes). */
export type Refusal = 'bad-uid' | 'bad-resource' | 'too-deep' | 'max-nodes' | 'max-resources' | 'unknown-node';

export interface GatewayCoreOptions extends Omit<BrokerLinkOptions, 'onOpen' | 'onMessage'> {
  protocol: string;
  /** Bound on the `out`s remembered while the broker is unreachable (sent on reconnect). */
  maxPendingOuts?: number;
  /**
   * Told about every `error` frame from the broker. When the frame names a uid the broker refused (a duplicate,
   * a bad frame), the core has already forgotten that node, so it is never replayed; the adapter drops it too.
   */
  onBrokerError?: (msg: BrError) => void;
  /** Most nodes this gateway holds; a new one beyond it is refused (logged once, counted). */
  maxNodes?: number;
  /** Most resources one node may have; more are refused. */
  maxResourcesPerNode?: number;
  /** Called once per refusal, so each adapter can count it in its own metrics. */
  onRefused?: (reason: Refusal, uid: string) => void;
  /** [gw-reports] --status-interval in milliseconds (default 10 s). */
  statusIntervalMs?: number;
  /** [gw-reports] Where the gateway listens for nodes (inventory `listen`); read at each connection. */
  listen?: () => string[];
  /** [gw-reports] Node counts by status; default `{online: <cached nodes>}`. */
  nodeCounts?: () => Record<string, number>;
}

export const CORE_DEFAULTS = { maxNodes: 100_000, maxResourcesPerNode: 64 } as const;

export class GatewayCore {
  readonly link: BrokerLink;
  readonly protocol: string;
  private readonly nodes = new Map<string, CachedNode>();
  /** Nodes that went out while the link was down: reported after the replay on reconnect. */
  private pendingOuts = new Map<string, OutReason>();
  private readonly maxPendingOuts: number;
  private writeHandler: WriteHandler = async () => ({ result: 'error', reason: 'gateway cannot write' });
  private readonly log: Logger;
  private readonly onBrokerError?: (msg: BrError) => void;
  private readonly onRefused?: (reason: Refusal, uid: string) => void;
  private readonly maxNodes: number;
  private readonly maxResourcesPerNode: number;
  /** Refusals already logged: a cap hit is logged once per reason, then only counted. */
  private readonly logged = new Set<Refusal>();
  /** [gw-reports] Totals for the status report; adapters count their own protocol errors in it too. */
  readonly stats = new GatewayStats();
  private readonly reporter: StatusReporter;
  private actionHandler?: ActionHandler;
  private opens = 0;

  constructor(options: GatewayCoreOptions) {
    this.onBrokerError = options.onBrokerError;
    this.onRefused = options.onRefused;
    this.maxNodes = options.maxNodes ?? CORE_DEFAULTS.maxNodes;
    this.maxResourcesPerNode = Math.min(
      options.maxResourcesPerNode ?? CORE_DEFAULTS.maxResourcesPerNode,
      MAX_RESOURCES_PER_NODE,
    );
    this.protocol = options.protocol;
    this.log = options.log;
    this.maxPendingOuts = options.maxPendingOuts ?? 100_000;
    this.link = new BrokerLink({ ...options, onOpen: () => this.replay(), onMessage: (m) => this.onBrokerMessage(m) });
    // [gw-reports]
    const nodeCounts = options.nodeCounts ?? (() => ({ online: this.nodes.size }));
    this.reporter = new StatusReporter({
      source: { stats: this.stats, nodeCounts },
      inventory: {
        protocol: options.protocol,
        version: gatewayVersion(),
        startedAt: Date.now(),
        actions: () => (this.actionHandler === undefined ? [] : [...ACTION_NAMES]),
        listen: options.listen ?? (() => []),
      },
      intervalMs: options.statusIntervalMs ?? STATUS_DEFAULTS.intervalMs,
      send: (frame) => this.link.send(frame),
      log: this.log,
    });
  }

  async start(): Promise<void> {
    this.reporter.start(); // [gw-reports]
    await this.link.start();
  }

  async stop(): Promise<void> {
    this.reporter.stop(); // [gw-reports]
    await this.link.stop();
  }

  /** [gw-reports] The protocol binding's side of the broker's actions (rediscover, forget, set-log-level). */
  onAction(handler: ActionHandler): void {
    this.actionHandler = handler;
  }

  onWrite(handler: WriteHandler): void {
    this.writeHandler = handler;
  }

  get size(): number {
    return this.nodes.size;
  }

  has(uid: string): boolean {
    return this.nodes.has(uid);
  }

  resources(uid: string): Readonly<Record<string, Json>> | undefined {
    return this.nodes.get(uid)?.resources;
  }

  uids(): IterableIterator<string> {
    return this.nodes.keys();
  }

  /**
   * A node appeared. Announcing a known uid again replaces its resources (the broker sees no flap).
   * `proof: 'token'` when the node proved its uid with a token (WebSocket, MQTT): the broker lets such a uid
   * move between gateways, never to an unauthenticated one. Returns false when refused: a uid or resource name
   * that breaks the identifier rule, a value nested too deep, or a cap reached. Nothing refused leaves the gateway.
   */
  nodeNew(uid: string, resources: Record<string, Json> = {}, proof?: 'token'): boolean {
    if (isIdentifier(uid) !== undefined) return this.refuse('bad-uid', uid);
    if (!this.nodes.has(uid) && this.nodes.size >= this.maxNodes) return this.refuse('max-nodes', uid);
    const table: Record<string, Json> = Object.create(null);
    let count = 0;
    for (const name in resources) {
      if (isIdentifier(name) !== undefined) return this.refuse('bad-resource', uid);
      if (valueTooDeep(resources[name])) return this.refuse('too-deep', uid);
      if (++count > this.maxResourcesPerNode) return this.refuse('max-resources', uid);
      table[name] = resources[name];
    }
    this.nodes.set(uid, { protocol: this.protocol, resources: table, resourceCount: count, proof });
    this.stats.messagesIn++; // [gw-reports]
    this.pendingOuts.delete(uid);
    this.send(this.newFrame(uid, this.nodes.get(uid)!));
    return true;
  }

  /** A value of a known node. Returns false when refused (see nodeNew). */
  nodeUpdate(uid: string, endpoint: string, data: Json): boolean {
    const node = this.nodes.get(uid);
    if (node === undefined) return this.refuse('unknown-node', uid);
    if (isIdentifier(endpoint) !== undefined) return this.refuse('bad-resource', uid);
    if (valueTooDeep(data)) return this.refuse('too-deep', uid);
    if (!(endpoint in node.resources)) {
      if (node.resourceCount >= this.maxResourcesPerNode) return this.refuse('max-resources', uid);
      node.resourceCount++;
    }
    node.resources[endpoint] = data;
    this.stats.messagesIn++; // [gw-reports]
    this.send({ type: 'update', uid, endpoint, data });
    return true;
  }

  /** The node rebooted: forget its values; discovery will report them again. */
  nodeReset(uid: string): void {
    const node = this.nodes.get(uid);
    if (node === undefined) return;
    node.resources = Object.create(null);
    node.resourceCount = 0;
    this.send({ type: 'reset', uid });
  }

  nodeOut(uid: string, reason: OutReason): void {
    if (!this.nodes.delete(uid)) return;
    if (!this.send({ type: 'out', uid, reason }) && this.pendingOuts.size < this.maxPendingOuts) {
      this.pendingOuts.set(uid, reason);
    }
  }

  /** Forgets a node without telling the broker (it refused the node, or the adapter dropped it). */
  forget(uid: string): void {
    this.nodes.delete(uid);
    this.pendingOuts.delete(uid);
  }

  private newFrame(uid: string, node: CachedNode): GatewayMessage {
    return node.proof === undefined
      ? { type: 'new', uid, protocol: node.protocol, data: node.resources }
      : { type: 'new', uid, protocol: node.protocol, data: node.resources, proof: node.proof };
  }

  private refuse(reason: Refusal, uid: string): false {
    this.onRefused?.(reason, uid);
    this.stats.error(reason); // [gw-reports]
    if (!this.logged.has(reason)) {
      this.logged.add(reason);
      // JSON.stringify: the uid may hold anything a device sent; the log line must stay one line.
      this.log.warn(
        { reason, uid: JSON.stringify(uid.slice(0, 64)) },
        'node or value refused (logged once per reason)',
      );
    }
    return false;
  }

  /** Sends one frame to the broker if connected. A value that cannot be serialized is dropped and logged. */
  private send(msg: GatewayMessage): boolean {
    const frame = encode(msg);
    if (frame === undefined) {
      this.log.warn({ type: msg.type }, 'frame cannot be serialized; dropped');
      return false;
    }
    return this.link.send(frame);
  }

  /** On every (re)connection: the current state of every node, then the outs that happened meanwhile. */
  private replay(): void {
    // [gw-reports] inventory first; token renewals open a connection too but are not reconnects.
    if (this.opens++ > 0) this.stats.reconnects = Math.max(0, this.opens - 1 - this.link.renewals);
    this.reporter.sendInventory();
    for (const [uid, node] of this.nodes) {
      this.send(this.newFrame(uid, node));
    }
    for (const [uid, reason] of this.pendingOuts) {
      // The broker only accepts an `out` for a node this connection announced.
      this.send({ type: 'new', uid, protocol: this.protocol });
      this.send({ type: 'out', uid, reason });
    }
    this.pendingOuts.clear();
    this.reporter.sendStatus(); // [gw-reports]
    this.log.info({ nodes: this.nodes.size }, 'node state replayed to broker');
  }

  private onBrokerMessage(msg: BrokerToGatewayMessage): void {
    switch (msg.type) {
      case 'write':
        // write() catches the handler's failures itself; this catch is for a failure to send the result.
        this.write(msg.id, msg.uid, msg.endpoint, msg.payload).catch((err) =>
          this.log.error({ err, id: msg.id }, 'write result could not be sent'),
        );
        return;
      case 'error':
        this.log.warn({ code: msg.code, reason: msg.reason, uid: msg.uid }, 'broker reported an error');
        this.stats.error(`broker-${msg.code}`); // [gw-reports]
        // A refused node is forgotten so the next reconnect does not replay it (and get refused again).
        if (msg.uid !== undefined && msg.code !== ErrorCode.NotOwner) this.forget(msg.uid);
        this.onBrokerError?.(msg);
        return;
      case 'action': // [gw-reports]
        this.action(msg).catch((err: unknown) => this.log.error({ err, id: msg.id }, 'action result not sent'));
        return;
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  private async write(id: string, uid: string, endpoint: string, payload: Json): Promise<void> {
    let outcome: WriteOutcome;
    if (!this.nodes.has(uid)) {
      outcome = { result: 'error', reason: 'unknown-node' };
    } else {
      try {
        outcome = await this.writeHandler(uid, endpoint, payload);
      } catch (err) {
        this.log.warn({ err, uid, endpoint }, 'write failed');
        outcome = { result: 'error', reason: (err as Error).message };
      }
    }
    this.stats.messagesOut++; // [gw-reports]
    if (outcome.result === 'error' || outcome.result === 'timeout') this.stats.error(`write-${outcome.result}`);
    this.send({ type: 'result', id, ...outcome });
  }

  /** [gw-reports] Runs an action from the broker and answers it. */
  private async action(msg: BrAction): Promise<void> {
    const result = await runAction(msg, this.actionHandler, this.log);
    // The core's logger may be a child of the adapter's (a pino child keeps its own level): set it too.
    if (msg.name === 'set-log-level' && result.result === 'ok' && msg.args?.level !== undefined) {
      this.log.level = msg.args.level;
    }
    this.send(result);
  }
}
