// [console] The WebSocket gateway's half of the device console (issue 12): console requests from the broker go to
// the node (an agent) under an id of the node link, and the node's exec-output/exec-exit frames go back under the
// broker's id. A request outlives the node's connection: an agent that reconnects (same uid) reports the exit of
// a command that ran meanwhile, and it is mapped back like any other. Bounded: a request the node never ends is
// dropped after its timeout and a grace, and at most `maxInFlight` requests are relayed at once.
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../services/common/log.ts';
import {
  type ExecAnswerFrame,
  ExecExit,
  ExecOutput,
  type ExecRequestFrame,
  exitOf,
} from '../../services/protocol/console-messages.ts';
import { compiledCheck } from '../../services/protocol/frames.ts';
import { describeError } from '../../services/protocol/frame-parser.ts';
import type { GatewayCore } from '../common/gateway-core.ts';
import { type NodeSession, NodeSocket } from './node-session.ts';

export interface ExecRelayOptions {
  /** Most console requests relayed at once through this gateway; beyond: `busy`. */
  maxInFlight: number;
  /** How long past a request's timeout the relay keeps its mapping (the agent kills with a grace, then reports). */
  graceMs: number;
  /** The wait bound of a request that names no timeout. */
  defaultTimeoutMs: number;
}

export const EXEC_RELAY_DEFAULTS: ExecRelayOptions = {
  maxInFlight: 100_000,
  graceMs: 30_000,
  defaultTimeoutMs: 600_000,
};

interface Relayed {
  /** The broker's id for the request. */
  bid: string;
  /** The node it runs on: only that node may answer it. */
  uid: string;
  timer?: NodeJS.Timeout;
}

const answerChecks = { 'exec-output': compiledCheck(ExecOutput), 'exec-exit': compiledCheck(ExecExit) };

export class ExecRelay {
  /** By the id on the node link. */
  private readonly byNodeId = new Map<string, Relayed>();
  /** Node-link id by the broker's id. */
  private readonly byBrokerId = new Map<string, string>();
  private readonly options: ExecRelayOptions;

  constructor(
    private readonly core: GatewayCore<NodeSession>,
    private readonly log: Logger,
    /** Counts a refused frame (the adapter's rejection counter). */
    private readonly rejected: (reason: string) => void,
    options: Partial<ExecRelayOptions> = {},
  ) {
    this.options = { ...EXEC_RELAY_DEFAULTS, ...options };
  }

  get inFlight(): number {
    return this.byNodeId.size;
  }

  /** Requests in flight per node: while a node has some, its answers are expected (see the adapter's rate limit). */
  private readonly perNode = new Map<string, number>();

  /** True while `uid` has console requests in flight. */
  busy(uid: string): boolean {
    return this.perNode.has(uid);
  }

  /** A console frame from the broker. */
  fromBroker(msg: ExecRequestFrame): void {
    if (msg.type === 'exec' || msg.type === 'pty-open') return this.start(msg);
    const nodeId = this.byBrokerId.get(msg.id);
    const relayed = nodeId === undefined ? undefined : this.byNodeId.get(nodeId);
    if (nodeId === undefined || relayed === undefined) return;
    // A cancel for a node that is away is not queued: the agent's own timeout still ends the command.
    this.toNode(relayed.uid, { ...msg, id: nodeId });
  }

  /**
   * A console answer from a node. `false` (and counted) when the frame is bad or names a request that is not this
   * node's: an agent cannot write into someone else's output.
   */
  fromNode(session: NodeSession, frame: ExecAnswerFrame): string | undefined {
    const check = answerChecks[frame.type];
    if (!check.check(frame)) return `${frame.type}: ${describeError(check.firstError(frame))}`;
    const relayed = this.byNodeId.get(frame.id);
    if (relayed === undefined || relayed.uid !== session.uid) {
      this.rejected('unknown-exec-id');
      this.log.debug({ uid: session.uid, id: frame.id }, 'console answer for an unknown request; dropped');
      return undefined;
    }
    if (frame.type === 'exec-exit') this.forget(frame.id, relayed);
    this.core.sendToBroker({ ...frame, id: relayed.bid });
    return undefined;
  }

  /** Every mapping ends (the gateway stops). */
  stop(): void {
    for (const [id, r] of this.byNodeId) this.forget(id, r);
  }

  private start(msg: Extract<ExecRequestFrame, { type: 'exec' | 'pty-open' }>): void {
    const node = this.core.node(msg.uid);
    const refusal: ['error' | 'busy', string] | undefined = this.byBrokerId.has(msg.id)
      ? ['error', 'duplicate request id']
      : this.byNodeId.size >= this.options.maxInFlight
        ? ['busy', 'gateway relays too many requests']
        : node === undefined || node.state.ws.readyState !== NodeSocket.OPEN
          ? ['error', 'node-offline']
          : undefined;
    if (refusal !== undefined) {
      this.core.sendToBroker(exitOf(msg.id, refusal[0], { reason: refusal[1] }));
      return;
    }
    const nodeId = randomUUID();
    const relayed: Relayed = { bid: msg.id, uid: msg.uid };
    if (msg.type === 'exec') {
      const ms = (msg.timeoutMs ?? this.options.defaultTimeoutMs) + this.options.graceMs;
      relayed.timer = setTimeout(() => {
        this.forget(nodeId, relayed);
        this.core.sendToBroker(exitOf(msg.id, 'timeout', { reason: 'no exit from the node' }));
      }, ms);
      relayed.timer.unref();
    }
    this.byNodeId.set(nodeId, relayed);
    this.byBrokerId.set(msg.id, nodeId);
    this.perNode.set(msg.uid, (this.perNode.get(msg.uid) ?? 0) + 1);
    this.toNode(msg.uid, { ...msg, id: nodeId });
  }

  private toNode(uid: string, frame: ExecRequestFrame): void {
    const ws = this.core.node(uid)?.state.ws;
    if (ws === undefined || ws.readyState !== NodeSocket.OPEN) return;
    ws.send(JSON.stringify(frame));
    this.core.noteOut();
  }

  private forget(nodeId: string, r: Relayed): void {
    clearTimeout(r.timer);
    this.byNodeId.delete(nodeId);
    this.byBrokerId.delete(r.bid);
    const n = (this.perNode.get(r.uid) ?? 1) - 1;
    if (n <= 0) this.perNode.delete(r.uid);
    else this.perNode.set(r.uid, n);
  }
}
