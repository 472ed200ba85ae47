// The WebSocket binding: devices dial out to ws://<gateway>:8001/node and keep one connection open.
// Authentication happens on the HTTP request, before the upgrade (auth.ts): a refused node gets a 401 with the
// reason and never a 101. After the upgrade, every frame is rate-limited, validated by one schema (codec.ts),
// and turned into core events; the core owns the node table (each node's state is its current session), the
// liveness timeouts, metrics and the broker link.
//
// Memory per connection is the design constraint (tens of thousands of sockets per process): the event
// handlers are shared functions created once per gateway (`this` is the socket, which points at its session),
// there is no timer per connection (the core's one sweep pings a share of the nodes each time, one token sweep
// walks all sessions), and per-message deflate is off.
//
// Hardening (issue 10): a connection must send its HTTP request within --handshake-timeout-ms; one address may
// hold at most --max-connections-per-address connections (429 beyond); anonymous nodes bring at most
// --new-nodes-per-minute new ids per address (429); frames are depth- and size-capped (1003 / 1009); a node
// reports at most --max-resources-per-node resources (1008); a session ends with 4401 at its token's exp or
// when its jti is revoked.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RawData } from 'ws';
import { KeyedRateLimiter } from '../../services/common/limits.ts';
import type { Logger } from '../../services/common/log.ts';
import { pathOf, refuseUpgrade } from '../../services/common/upgrade.ts';
import { CloseCode, ErrorCode } from '../../services/protocol/errors.ts';
import type { Json } from '../../services/protocol/messages.ts';
import type { ExecAnswerFrame } from '../../services/protocol/console-messages.ts';
import type { ForgetReason, ProtocolAdapter, TransportHealth, WriteOutcome } from '../common/adapter.ts';
import type { GatewayCore } from '../common/gateway-core.ts';
import type { GatewayNode } from '../common/node-table.ts';
import type { TokenChecks } from '../../services/common/token-checks.ts';
import { type Identity, identify } from './auth.ts';
import { type NodeAck, type NodeFrame, parseNodeFrame } from './codec.ts';
import { askForResources } from './discovery.ts';
import { NodeSession, NodeSocket } from './node-session.ts';
import type { WsGatewayOptions } from './options.ts';
import { WsTransport } from './transport.ts';
import { PendingWrites } from './writes.ts';
import { ExecRelay } from './exec-relay.ts'; // [console]

/** The protocol name the broker and the dashboard show (pyaiot's `protocol` resource said "WebSocket"). */
export const WS_PROTOCOL = 'WebSocket';
export const NODE_PATH = '/node';
/**
 * The core's sweep runs this many times per ping interval and pings that share of the nodes each time:
 * pinging 15k sockets (and receiving 15k pongs) at one instant would stall updates for tens of milliseconds.
 */
export const SWEEP_STEPS = 20;
/** A node silent (no frame, no pong) for this many ping intervals goes out with reason timeout. */
export const MISSED_PINGS = 2;

type WsNode = GatewayNode<NodeSession>;

export class WsAdapter implements ProtocolAdapter<NodeSession> {
  readonly protocol = WS_PROTOCOL;
  readonly transport: WsTransport;
  readonly counters;
  private readonly rate: { perSecond: number; burst: number };
  private readonly writes: PendingWrites;
  private tokenTimer?: NodeJS.Timeout;
  /** New node ids of anonymous nodes, per source address. */
  private readonly newNodes: KeyedRateLimiter;
  /** Where the ping sweep stopped; a live Map iterator sees nodes added meanwhile and skips deleted ones. */
  private sweepCursor?: Iterator<WsNode>;
  /** When the current ping round began: a new round starts one ping interval after the previous one. */
  private roundStartedAt = 0;
  private running = false;
  /** [console] Console requests to the nodes (agents) and their answers. */
  readonly exec: ExecRelay;

  // Shared handlers: one function object per gateway, not per connection. `this` is the socket.
  private readonly onSocketMessage: (this: NodeSocket, data: RawData, isBinary: boolean) => void;
  private readonly onSocketPong: (this: NodeSocket) => void;
  private readonly onSocketError: (this: NodeSocket, err: Error & { code?: string }) => void;
  private readonly onSocketClose: (this: NodeSocket, code: number, reason: Buffer) => void;

  constructor(
    private readonly config: WsGatewayOptions,
    private readonly core: GatewayCore<NodeSession>,
    private readonly log: Logger,
    /** Node token checks (key, lifetimes, revocations), loaded by the gateway at start. */
    private readonly tokens: () => TokenChecks | undefined,
  ) {
    this.rate = { perSecond: config.rateLimit, burst: config.rateBurst };
    this.writes = new PendingWrites(config);
    this.newNodes = new KeyedRateLimiter({ perSecond: config.newNodesPerMinute / 60, burst: config.newNodesPerMinute });
    this.transport = new WsTransport({
      port: config.port,
      host: config.host,
      maxFrameBytes: config.maxFrameBytes,
      handshakeTimeoutMs: config.handshakeTimeoutMs,
      closeTimeoutMs: config.closeTimeoutMs,
      maxConnectionsPerAddress: config.maxConnectionsPerAddress,
      log,
    });
    const m = core.metrics;
    this.counters = {
      accepted: m.counter('connections_total', 'node connections accepted'),
      replaced: m.counter('replaced_total', 'node connections replaced by a newer one with the same id'),
      framesIn: m.counter('frames_in_total', 'frames received from nodes'),
      updates: m.counter('updates_total', 'resource values received from nodes'),
      rejected: m.counterFamily('rejections_total', 'refused connections and frames, by reason', 'reason'),
      tokenEnds: m.counterFamily(
        'sessions_ended_total',
        'node sessions closed with 4401 (token expired or revoked), by reason',
        'reason',
      ),
    };
    m.gauge('connections', 'open node connections', () => this.transport.connections);
    // [console]
    this.exec = new ExecRelay(core, log, (reason) => this.rejected(reason));
    core.onExec((msg) => this.exec.fromBroker(msg));
    m.gauge('exec_in_flight', 'console requests relayed to nodes and not ended yet', () => this.exec.inFlight);

    const adapter = this;
    this.onSocketMessage = function (data, isBinary) {
      if (this.session !== undefined) adapter.onFrame(this.session, data, isBinary);
    };
    this.onSocketPong = function () {
      const node = this.session?.node;
      if (node !== undefined) node.lastSeen = Date.now();
    };
    this.onSocketError = function (err) {
      adapter.onSocketFailure(this, err);
    };
    this.onSocketClose = function (code, reason) {
      if (this.session !== undefined) adapter.onClose(this.session, code, reason);
    };
  }

  async start(): Promise<void> {
    await this.transport.start({
      onUpgrade: (req, socket, head) => this.onUpgrade(req, socket, head),
      onRefused: (reason) => this.rejected(reason),
    });
    this.running = true;
    this.tokenTimer = setInterval(() => this.sweepTokens(), this.config.tokenSweepMs);
    this.tokenTimer.unref();
    this.log.info({ port: this.transport.port, path: NODE_PATH }, 'ws gateway listening');
  }

  /** Closes every node with 1001 (the core closed the broker link first: no node is reported out). */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.tokenTimer);
    this.writes.failAll('gateway shutting down');
    this.exec.stop(); // [console]
    await this.transport.stop();
    this.log.info('ws gateway stopped');
  }

  health(): TransportHealth {
    return this.transport.listening ? { up: true } : { up: false, detail: `WebSocket port not listening` };
  }

  listen(): string[] {
    const port = this.transport.port;
    return port === 0 ? [] : [`ws://${this.config.host}:${port}${NODE_PATH}`];
  }

  discover(node: WsNode): void {
    askForResources(node.state);
  }

  /**
   * The core dropped the node. Silent past the liveness timeout (half-open TCP): terminated, already reported
   * out by the core. Refused by the broker (the core has forgotten it, so it is never replayed):
   * MYC_ERR_DUPLICATE_UID means another gateway (or worker) holds the uid, e.g. the device reconnected elsewhere
   * before the old link died; the node is closed with 4409 and claims the uid again when it reconnects. Any other
   * refusal naming a uid (a frame the broker found bad): closed with 1008 and the code. Forgotten by an
   * operator: closed with 1000.
   */
  forget(node: WsNode, why: ForgetReason): void {
    const session = node.state;
    session.node = undefined;
    if (why.reason === 'timeout') {
      this.log.info({ uid: node.uid }, 'node stopped answering pings; dropping it');
      session.outReason = 'timeout';
      this.writes.fail(session, 'node timed out');
      session.ws.terminate();
      return;
    }
    if (why.reason === 'removed') {
      // An operator's forget: the core reported it out already; a node that reconnects is announced again.
      session.outReason = 'removed';
      this.writes.fail(session, 'node forgotten by an operator');
      session.ws.close(CloseCode.Normal, 'forgotten by an operator');
      return;
    }
    this.rejected(`broker-${why.code}`);
    this.log.info({ uid: node.uid, code: why.code }, 'broker refused the node; closing it');
    this.writes.fail(session, 'node refused by the broker');
    if (why.code === ErrorCode.DuplicateUid) session.ws.close(CloseCode.UidTaken, 'uid held by another gateway');
    else session.ws.close(CloseCode.PolicyViolation, `refused by the broker: ${why.code}`);
  }

  /**
   * Liveness, from the core's sweep (RFC 6455 §5.5.2 ping, §5.5.3 pong): pings the next 1/SWEEP_STEPS of the
   * nodes, so every node is pinged once per ping interval and the pings go out evenly spread over it. A pong or
   * any frame refreshes the node's lastSeen; the core times out a node silent for MISSED_PINGS intervals.
   */
  tick(now: number): void {
    if (this.sweepCursor === undefined) {
      // With few nodes a round finishes early; waiting for the interval keeps one ping per interval.
      if (now - this.roundStartedAt < this.config.pingIntervalMs * (1 - 0.5 / SWEEP_STEPS)) return;
      this.roundStartedAt = now;
      this.sweepCursor = this.core.nodes();
    }
    let budget = Math.ceil(this.core.size / SWEEP_STEPS);
    while (budget > 0) {
      const next = this.sweepCursor.next();
      if (next.done) {
        this.sweepCursor = undefined;
        return;
      }
      const ws = next.value.state.ws;
      if (ws.readyState === NodeSocket.OPEN) ws.ping();
      budget--;
    }
  }

  private rejected(reason: string): void {
    this.counters.rejected(reason).inc();
    this.core.noteError(reason);
  }

  // ---------------------------------------------------------------------------------------------
  // Connections

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.admit(req, socket, head).catch((err: unknown) => {
      this.log.error({ err }, 'node upgrade failed');
      refuseUpgrade(socket, 400, 'upgrade failed');
    });
  }

  private async admit(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const path = pathOf(req);
    if (path !== NODE_PATH) {
      this.rejected('unknown-path');
      return refuseUpgrade(socket, 404, `no WebSocket endpoint at ${path}; nodes connect to ${NODE_PATH}`);
    }
    const identity = await identify(req, this.tokens(), this.config.allowAnonymousNodes);
    if ('refuse' in identity) {
      this.rejected(identity.counter);
      this.log.warn({ reason: identity.refuse, remote: req.socket.remoteAddress }, 'node refused');
      return refuseUpgrade(socket, identity.status, identity.refuse);
    }
    const current = this.core.node(identity.uid)?.state;
    if (current?.authenticated && !identity.authenticated) {
      // An anonymous connection naming itself after a token-holding node must not hijack it.
      this.rejected('id-taken');
      return refuseUpgrade(socket, 403, `node id ${identity.uid} belongs to an authenticated node`);
    }
    if (!this.running || this.core.isStopping) return refuseUpgrade(socket, 503, 'gateway shutting down');
    const known = current !== undefined;
    if (!known && this.core.size >= this.config.maxNodes) {
      this.core.noteRefusal('max-nodes', identity.uid);
      return refuseUpgrade(socket, 503, `gateway full (${this.config.maxNodes} nodes)`);
    }
    // Anonymous nodes pick their ids: new ids are rate-limited per address. A token names one id the operator
    // issued, so tokens themselves bound what an authenticated device can bring.
    if (!known && !identity.authenticated && !this.newNodes.take(req.socket.remoteAddress ?? 'unknown')) {
      this.rejected('new-node-rate');
      return refuseUpgrade(socket, 429, `more than ${this.config.newNodesPerMinute} new nodes per minute`);
    }
    this.transport.handleUpgrade(req, socket, head, (ws) => this.adopt(ws, identity));
  }

  private adopt(ws: NodeSocket, identity: Identity): void {
    const { uid, authenticated } = identity;
    const session = new NodeSession(uid, ws, authenticated, this.rate, Date.now(), identity.expiresAt, identity.jti);
    ws.session = session;
    ws.on('message', this.onSocketMessage);
    ws.on('pong', this.onSocketPong);
    ws.on('error', this.onSocketError);
    ws.on('close', this.onSocketClose);
    this.counters.accepted.inc();
    const node = this.core.node(uid);
    if (node !== undefined) {
      // The newer connection wins (the old one is usually a half-open link the device gave up on). The old
      // socket's close handler sees it is no longer current and reports nothing, so clients see no flap. The
      // known uid keeps its cached values (and the broker its online state).
      const previous = node.state;
      previous.node = undefined;
      node.state = session;
      node.lastSeen = Date.now();
      session.node = node;
      this.counters.replaced.inc();
      this.log.info({ uid }, 'node reconnected; replacing its previous connection');
      this.writes.fail(previous, 'replaced by a newer connection');
      previous.ws.close(CloseCode.Replaced, 'replaced by a newer connection');
    } else {
      // A new uid is announced now, as pyaiot did on open, and its values follow as the node answers the discover
      // request. A token-holding node proved its uid (the broker never hands such a uid to an unauthenticated
      // protocol).
      const added = this.core.add(uid, session, authenticated ? { proof: 'token' } : {});
      if (typeof added === 'string') {
        return this.reject(session, CloseCode.PolicyViolation, ErrorCode.LimitReached, `node refused: ${added}`);
      }
      session.node = added;
    }
    askForResources(session);
    this.core.noteOut();
    this.log.debug({ uid, authenticated }, 'node connected');
  }

  // ---------------------------------------------------------------------------------------------
  // Frames: one dispatcher, one handler per kind.

  private onFrame(session: NodeSession, data: RawData, isBinary: boolean): void {
    this.counters.framesIn.inc();
    this.core.noteIn();
    // A socket that is closing (refused, replaced) has had its say: later frames are dropped uncounted.
    if (session.ws.readyState !== NodeSocket.OPEN) return;
    const now = Date.now();
    if (session.node !== undefined) session.node.lastSeen = now;
    // Between exp and the next token sweep, nothing the node sends is processed.
    if (now >= session.expiresAt) return this.endSession(session, 'token expired');
    // [console] An agent answering console requests sends a frame per output chunk: those were asked for, and are
    // bounded by the agent's output cap and the relay's timeouts, so a node with requests in flight is not held
    // to the per-node frame rate (meant for sensors' updates).
    if (!session.admit(now) && !this.exec.busy(session.uid)) {
      return this.reject(session, CloseCode.PolicyViolation, ErrorCode.RateLimited, 'rate limit exceeded');
    }
    if (isBinary)
      return this.reject(session, CloseCode.UnsupportedData, ErrorCode.BadType, 'binary frames are not accepted');
    const parsed = parseNodeFrame(data.toString());
    if (!parsed.ok) return this.reject(session, parsed.close, parsed.code, parsed.reason);
    this.dispatch(session, parsed.value);
  }

  private dispatch(session: NodeSession, frame: NodeFrame): void {
    switch (frame.type) {
      case 'update': {
        const uid = session.uid;
        for (const endpoint in frame.data) {
          // Refused (--max-resources-per-node, or a node the broker refused): the node is closed with 1008 and
          // the rest of the frame dropped. Closing, not an error frame: pyaiot nodes would not read one, and a
          // node that keeps inventing resource names must not keep its connection.
          const refusal = this.core.update(uid, endpoint, frame.data[endpoint]);
          if (refusal !== undefined) {
            const reason =
              refusal === 'max-resources'
                ? `more than ${this.config.maxResourcesPerNode} resources`
                : `value refused: ${refusal}`;
            return this.reject(session, CloseCode.PolicyViolation, ErrorCode.LimitReached, reason);
          }
        }
        this.counters.updates.inc();
        return;
      }
      case 'hello':
        session.acks = frame.ack === true;
        return;
      case 'ack':
        return this.onAck(session, frame);
      case 'exec-output': // [console]
      case 'exec-exit': {
        const problem = this.exec.fromNode(session, frame as unknown as ExecAnswerFrame);
        if (problem !== undefined) return this.reject(session, CloseCode.UnsupportedData, ErrorCode.BadShape, problem);
        return;
      }
      default: {
        const never: never = frame;
        return never;
      }
    }
  }

  private onAck(session: NodeSession, ack: NodeAck): void {
    session.acks = true;
    if (!this.writes.ack(session, ack)) {
      this.rejected('unknown-ack');
      this.log.debug({ uid: session.uid, id: ack.id }, 'ack for an unknown or expired write');
    }
  }

  private reject(session: NodeSession, close: number, code: string, reason: string): void {
    this.rejected(code);
    this.log.warn({ uid: session.uid, code, reason }, 'bad frame from node; closing');
    session.ws.close(close, reason.slice(0, 120));
  }

  private onSocketFailure(ws: NodeSocket, err: Error & { code?: string }): void {
    // ws reports an oversized frame as an error and then closes with 1009 itself (RFC 6455 §7.4.1).
    const reason = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? ErrorCode.TooBig : (err.code ?? 'socket-error');
    this.rejected(reason);
    this.log.warn({ uid: ws.session?.uid, code: err.code, err: err.message }, 'node socket error');
  }

  private onClose(session: NodeSession, code: number, reason: Buffer): void {
    this.writes.fail(session, 'node disconnected');
    // Only the current connection of an id reports the node gone; a replaced or dropped one closes silently.
    const node = session.node;
    if (node === undefined || this.core.node(session.uid) !== node) return;
    session.node = undefined;
    // While stopping, nothing is reported: the broker's grace period decides (see GatewayCore.stop()).
    if (this.core.isStopping) {
      this.core.forget(session.uid);
      return;
    }
    this.core.nodeOut(session.uid, session.outReason);
    this.log.debug({ uid: session.uid, code, reason: reason.toString(), out: session.outReason }, 'node gone');
  }

  // ---------------------------------------------------------------------------------------------
  // Token lifetime: one sweep for all sessions, every --token-sweep-ms (no timer per connection).

  private sweepTokens(): void {
    const now = Date.now();
    const revocations = this.tokens()?.revocations;
    for (const node of this.core.nodes()) {
      const session = node.state;
      if (now >= session.expiresAt) this.endSession(session, 'token expired');
      else if (revocations !== undefined && session.jti !== undefined && revocations.isRevoked(session.jti)) {
        this.endSession(session, 'token revoked');
      }
    }
  }

  /** Closes a session whose token is no longer valid with 4401; the node goes out (reason closed). */
  private endSession(session: NodeSession, reason: 'token expired' | 'token revoked'): void {
    if (session.ws.readyState !== NodeSocket.OPEN) return;
    this.counters.tokenEnds(reason === 'token expired' ? 'expired' : 'revoked').inc();
    this.log.info({ uid: session.uid, reason }, 'node session ended');
    this.writes.fail(session, reason);
    session.ws.close(CloseCode.TokenExpired, reason);
  }

  // ---------------------------------------------------------------------------------------------
  // Writes from the broker

  write(node: WsNode, endpoint: string, payload: Json): Promise<WriteOutcome> {
    return this.writes.write(node.state, endpoint, payload);
  }
}
