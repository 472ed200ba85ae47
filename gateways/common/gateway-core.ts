// What every gateway shares, whatever the device protocol: the cache of its nodes, the broker link,
// replay on reconnect, and the dispatch of writes to the protocol binding.
// A protocol binding calls nodeNew / nodeUpdate / nodeReset / nodeOut and answers writes.
import type { Logger } from '../../services/common/log.ts';
import { encode } from '../../services/protocol/frames.ts';
import type {
  BrError,
  BrokerToGatewayMessage,
  GatewayMessage,
  Json,
  OutReason,
  WriteResult,
} from '../../services/protocol/messages.ts';
import { BrokerLink, type BrokerLinkOptions } from './broker-link.ts';

export interface WriteOutcome {
  result: WriteResult;
  reason?: string;
}

/** The protocol binding's side of a write: deliver `payload` to the node's resource. */
export type WriteHandler = (uid: string, endpoint: string, payload: Json) => Promise<WriteOutcome>;

interface CachedNode {
  protocol: string;
  resources: Record<string, Json>;
}

export interface GatewayCoreOptions extends Omit<BrokerLinkOptions, 'onOpen' | 'onMessage'> {
  protocol: string;
  /** Bound on the `out`s remembered while the broker is unreachable (sent on reconnect). */
  maxPendingOuts?: number;
  /** Told about every `error` frame from the broker (e.g. a uid refused as owned by another gateway). */
  onBrokerError?: (msg: BrError) => void;
}

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

  constructor(options: GatewayCoreOptions) {
    this.onBrokerError = options.onBrokerError;
    this.protocol = options.protocol;
    this.log = options.log;
    this.maxPendingOuts = options.maxPendingOuts ?? 100_000;
    this.link = new BrokerLink({ ...options, onOpen: () => this.replay(), onMessage: (m) => this.onBrokerMessage(m) });
  }

  async start(): Promise<void> {
    await this.link.start();
  }

  async stop(): Promise<void> {
    await this.link.stop();
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

  /** A node appeared. Announcing a known uid again replaces its resources (the broker sees no flap). */
  nodeNew(uid: string, resources: Record<string, Json> = {}): void {
    this.nodes.set(uid, { protocol: this.protocol, resources: { ...resources } });
    this.pendingOuts.delete(uid);
    this.send({ type: 'new', uid, protocol: this.protocol, data: resources });
  }

  nodeUpdate(uid: string, endpoint: string, data: Json): void {
    const node = this.nodes.get(uid);
    if (node === undefined) return;
    node.resources[endpoint] = data;
    this.send({ type: 'update', uid, endpoint, data });
  }

  /** The node rebooted: forget its values; discovery will report them again. */
  nodeReset(uid: string): void {
    const node = this.nodes.get(uid);
    if (node === undefined) return;
    node.resources = {};
    this.send({ type: 'reset', uid });
  }

  nodeOut(uid: string, reason: OutReason): void {
    if (!this.nodes.delete(uid)) return;
    if (!this.send({ type: 'out', uid, reason }) && this.pendingOuts.size < this.maxPendingOuts) {
      this.pendingOuts.set(uid, reason);
    }
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
    for (const [uid, node] of this.nodes) {
      this.send({ type: 'new', uid, protocol: node.protocol, data: node.resources });
    }
    for (const [uid, reason] of this.pendingOuts) {
      // The broker only accepts an `out` for a node this connection announced.
      this.send({ type: 'new', uid, protocol: this.protocol });
      this.send({ type: 'out', uid, reason });
    }
    this.pendingOuts.clear();
    this.log.info({ nodes: this.nodes.size }, 'node state replayed to broker');
  }

  private onBrokerMessage(msg: BrokerToGatewayMessage): void {
    switch (msg.type) {
      case 'write':
        void this.write(msg.id, msg.uid, msg.endpoint, msg.payload);
        return;
      case 'error':
        this.log.warn({ code: msg.code, reason: msg.reason, uid: msg.uid }, 'broker reported an error');
        this.onBrokerError?.(msg);
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
    this.send({ type: 'result', id, ...outcome });
  }
}
