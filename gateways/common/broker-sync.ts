// The core's side of the broker link: node events become frames, an `out` the link could not deliver is kept
// (bounded) until it reconnects, and every (re)connection replays the state of every node, then those outs.
// State, not a backlog: memory is bounded by the node count.
import type { Logger } from '../../services/common/log.ts';
import { encode } from '../../services/protocol/frames.ts';
import type { GatewayMessage, Json, OutReason } from '../../services/protocol/messages.ts';
import type { WriteOutcome } from './adapter.ts';
import type { BrokerLink } from './broker-link.ts';
import type { GatewayNode } from './node-table.ts';

export class BrokerSync<S> {
  /** Nodes that went out while the link was down: reported after the replay on reconnect. */
  private readonly pendingOuts = new Map<string, OutReason>();

  constructor(
    private readonly link: BrokerLink,
    private readonly nodes: () => Iterable<GatewayNode<S>>,
    private readonly protocol: () => string,
    private readonly log: Logger,
    private readonly maxPendingOuts: number,
  ) {}

  announce(node: GatewayNode<S>): void {
    this.pendingOuts.delete(node.uid);
    this.send(this.newFrame(node));
  }

  update(uid: string, endpoint: string, data: Json): void {
    this.send({ type: 'update', uid, endpoint, data });
  }

  reset(uid: string): void {
    this.send({ type: 'reset', uid });
  }

  out(uid: string, reason: OutReason): void {
    if (!this.send({ type: 'out', uid, reason }) && this.pendingOuts.size < this.maxPendingOuts) {
      this.pendingOuts.set(uid, reason);
    }
  }

  /** The node is dropped without a word to the broker: no pending out either. */
  forget(uid: string): void {
    this.pendingOuts.delete(uid);
  }

  result(id: string, outcome: WriteOutcome): void {
    this.send({ type: 'result', id, ...outcome });
  }

  /** On every (re)connection: the current state of every node, then the outs that happened meanwhile. */
  replay(): void {
    let n = 0;
    for (const node of this.nodes()) {
      this.send(this.newFrame(node));
      n++;
    }
    for (const [uid, reason] of this.pendingOuts) {
      // The broker only accepts an `out` for a node this connection announced.
      this.send({ type: 'new', uid, protocol: this.protocol() });
      this.send({ type: 'out', uid, reason });
    }
    this.pendingOuts.clear();
    this.log.info({ nodes: n }, 'node state replayed to broker');
  }

  private newFrame(node: GatewayNode<S>): GatewayMessage {
    const protocol = this.protocol();
    return node.proof === undefined
      ? { type: 'new', uid: node.uid, protocol, data: node.resources }
      : { type: 'new', uid: node.uid, protocol, data: node.resources, proof: node.proof };
  }

  /** Sends one frame if connected. A value that cannot be serialized is dropped and logged. */
  send(msg: GatewayMessage): boolean {
    const frame = encode(msg);
    if (frame === undefined) {
      this.log.warn({ type: msg.type }, 'frame cannot be serialized; dropped');
      return false;
    }
    return this.link.send(frame);
  }
}
