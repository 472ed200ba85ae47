// The WebSocket gateway: devices dial out to ws://<gateway>:8001/node and keep one connection open.
// Authentication happens on the HTTP request, before the upgrade (ws README, "client authentication"): a
// refused node gets a 401 with the reason and never a 101. After the upgrade, every frame is rate-limited,
// validated by one schema, and turned into GatewayCore calls; GatewayCore owns the broker link and the cache.
//
// Memory per connection is the design constraint (tens of thousands of sockets per process): the event
// handlers are shared functions created once per gateway (`this` is the socket, which points at its session),
// there is no timer per connection (one ping sweep and one token sweep walk all sessions), and per-message
// deflate is off.
//
// Hardening (issue 10): a connection must send its HTTP request within --handshake-timeout-ms; one address may
// hold at most --max-connections-per-address connections (429 beyond); anonymous nodes bring at most
// --new-nodes-per-minute new ids per address (429); frames are depth- and size-capped (1003 / 1009); a node
// reports at most --max-resources-per-node resources (1008); a session ends with 4401 at its token's exp or
// when its jti is revoked; /metrics needs a viewer, operator or admin token unless --public-metrics.
import type { KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { type RawData, type Server as WsServer, WebSocketServer } from 'ws';
import { pathOf, refuseUpgrade } from '../../services/common/upgrade.ts';
import { Metrics } from '../../services/common/metrics.ts';
import { defaultKeyFile, readPublicKey } from '../../services/common/keys.ts';
import { ConnectionCounter, KeyedRateLimiter } from '../../services/common/limits.ts';
import { parseMaxTokenTtl, TokenPolicy } from '../../services/common/token-policy.ts';
import type { Logger } from '../../services/common/log.ts';
import { extractToken, type VerifyOptions, verifyToken } from '../../services/common/tokens.ts';
import { CloseCode, ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import type { Json, Role } from '../../services/protocol/messages.ts';
import { isIdentifier } from '../../services/protocol/schema.ts';
import { GatewayCore, type Refusal, type WriteOutcome } from '../common/gateway-core.ts';
import { type ActionHandler, setLoggerLevels, unknownNode } from '../common/actions.ts'; // [gw-reports]
import { gatewayTokenSource } from '../common/options.ts';
import { DISCOVER_FRAME, type NodeAck, type NodeFrame, parseNodeFrame, writeFrame } from './node-frames.ts';
import { NodeSession, NodeSocket } from './node-session.ts';
import type { WsGatewayConfig } from './options.ts';

/** The protocol name the broker and the dashboard show (pyaiot's `protocol` resource said "WebSocket"). */
export const WS_PROTOCOL = 'WebSocket';
export const NODE_PATH = '/node';
const NODE_ROLES: readonly Role[] = ['node'];
/** Who may read /metrics (as on the broker): anyone who may read the node table. */
const METRICS_ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];
/**
 * The ping sweep runs this many times per ping interval and probes that share of the sessions each time:
 * pinging 15k sockets (and receiving 15k pongs) at one instant would stall updates for tens of milliseconds.
 */
const SWEEP_STEPS = 20;

export type WsGatewayOptions = Omit<WsGatewayConfig, 'workers'> & { workers?: number };

export interface WsGatewayDeps {
  log: Logger;
  /** Token for the broker link; default: `--token`, else minted from `--key-file`. */
  tokenSource?: () => Promise<string>;
  /** Verifies node tokens; default: read from `--node-key-file` / `--key-file` at start. */
  publicKey?: KeyObject;
  /**
   * Revoked token ids: refused at the upgrade, and sessions closed (4401). Default: the RevocationList of
   * --revocation-file (revoked.json beside the node key), polled every --revocation-poll-ms.
   */
  revocations?: { isRevoked(jti?: string): boolean };
}

/** A TCP connection of the HTTP server, with the address it is counted under (remoteAddress is gone at close). */
interface CountedSocket extends Socket {
  countedAddress?: string;
}

interface PendingWrite {
  session: NodeSession;
  resolve: (outcome: WriteOutcome) => void;
  timer: NodeJS.Timeout;
}

export class WsGateway {
  readonly core: GatewayCore;
  readonly metrics = new Metrics('mycelium_ws_gateway_');
  /** The current connection of each node id. A replaced connection is no longer here while it closes. */
  readonly sessions = new Map<string, NodeSession>();
  readonly counters;
  private readonly log: Logger;
  private readonly server: Server;
  private readonly wss: WsServer<typeof NodeSocket>;
  private readonly rate: { perSecond: number; burst: number };
  private readonly pending = new Map<string, PendingWrite>();
  private writeSeq = 0;
  private publicKey?: KeyObject;
  private tokenFn?: () => Promise<string>;
  private sweepTimer?: NodeJS.Timeout;
  private tokenTimer?: NodeJS.Timeout;
  /** The token policy (max lifetimes, revocation list) when built from the config rather than given. */
  private policy?: TokenPolicy;
  private revocations?: { isRevoked(jti?: string): boolean };
  private verifyOptions: VerifyOptions = {};
  private readonly perAddress: ConnectionCounter;
  /** New node ids of anonymous nodes, per source address. */
  private readonly newNodes: KeyedRateLimiter;
  /** The last refusal the core reported, to name it when a node is closed for it. */
  private lastRefusal?: Refusal;
  /** Where the sweep stopped; a live Map iterator sees sessions added meanwhile and skips deleted ones. */
  private sweepCursor?: Iterator<NodeSession>;
  /** When the current sweep round began: a new round starts one ping interval after the previous one. */
  private roundStartedAt = 0;
  private started = false;
  private stopping?: Promise<void>;

  // Shared handlers: one function object per gateway, not per connection. `this` is the socket.
  private readonly onSocketMessage: (this: NodeSocket, data: RawData, isBinary: boolean) => void;
  private readonly onSocketPong: (this: NodeSocket) => void;
  private readonly onSocketError: (this: NodeSocket, err: Error & { code?: string }) => void;
  private readonly onSocketClose: (this: NodeSocket, code: number, reason: Buffer) => void;
  private readonly onTcpClose: (this: CountedSocket) => void;
  private readonly onHandshakeTimeout: (this: CountedSocket) => void;

  constructor(
    readonly config: WsGatewayOptions,
    private readonly deps: WsGatewayDeps,
  ) {
    const gatewayId = config.gatewayId;
    this.log = deps.log.child({ gateway: gatewayId ?? 'ws' });
    this.rate = { perSecond: config.rateLimit, burst: config.rateBurst };
    this.core = new GatewayCore({
      protocol: WS_PROTOCOL,
      urls: config.brokerUrl,
      token: () => this.brokerToken(),
      log: this.log,
      backoffInitialMs: config.backoffInitialMs,
      backoffMaxMs: config.backoffMaxMs,
      pingIntervalMs: config.brokerPingMs,
      maxNodes: config.maxNodes,
      maxResourcesPerNode: config.maxResourcesPerNode,
      onRefused: (reason) => {
        this.lastRefusal = reason;
        this.counters.refused(reason).inc();
      },
      onBrokerError: (msg) => this.onBrokerRefusal(msg.code, msg.uid),
      // [gw-reports] status reports, inventory and actions
      statusIntervalMs: config.statusInterval * 1000,
      listen: () => (this.port === 0 ? [] : [`ws://${config.host}:${this.port}${NODE_PATH}`]),
      nodeCounts: () => ({ online: this.sessions.size }),
    });
    this.core.onAction(this.actions()); // [gw-reports]
    this.perAddress = new ConnectionCounter(config.maxConnectionsPerAddress);
    this.newNodes = new KeyedRateLimiter({ perSecond: config.newNodesPerMinute / 60, burst: config.newNodesPerMinute });
    this.core.onWrite((uid, endpoint, payload) => this.write(uid, endpoint, payload));

    const m = this.metrics;
    this.counters = {
      accepted: m.counter('connections_total', 'node connections accepted'),
      replaced: m.counter('replaced_total', 'node connections replaced by a newer one with the same id'),
      framesIn: m.counter('frames_in_total', 'frames received from nodes'),
      updates: m.counter('updates_total', 'resource values received from nodes'),
      rejected: m.counterFamily('rejections_total', 'refused connections and frames, by reason', 'reason'),
      outs: m.counterFamily('nodes_out_total', 'nodes gone, by reason', 'reason'),
      writes: m.counterFamily('writes_total', 'writes by result', 'result'),
      refused: m.counterFamily(
        'node_refusals_total',
        'nodes and values refused before reaching the broker (identifier rule, depth, caps), by reason',
        'reason',
      ),
      tokenEnds: m.counterFamily(
        'sessions_ended_total',
        'node sessions closed with 4401 (token expired or revoked), by reason',
        'reason',
      ),
    };
    m.gauge('connections', 'open node connections', () => this.sessions.size);
    m.gauge('nodes', 'nodes in the gateway cache', () => this.core.size);
    m.gauge('broker_connected', '1 while the link to the broker is open', () => (this.core.link.connected ? 1 : 0));

    // headersTimeout/requestTimeout bound a slow request; Node checks them every connectionsCheckingInterval
    // (30 s by default, hence set here). A socket that sends nothing at all is caught by the idle timeout set in
    // onConnection, which ws clears (setTimeout(0)) once the upgrade completes.
    this.server = createServer(
      {
        headersTimeout: config.handshakeTimeoutMs,
        requestTimeout: config.handshakeTimeoutMs,
        connectionsCheckingInterval: Math.max(10, Math.min(1000, config.handshakeTimeoutMs / 2)),
      },
      (req, res) => this.onHttp(req, res),
    );
    this.server.on('connection', (socket: CountedSocket) => this.onConnection(socket));
    this.wss = new WebSocketServer<typeof NodeSocket>({
      noServer: true,
      WebSocket: NodeSocket,
      maxPayload: config.maxFrameBytes,
      perMessageDeflate: false,
      // Needed by stop() to close connections that were replaced but are still closing.
      clientTracking: true,
      // Browsers send the token as the subprotocol pair `bearer, <jwt>`; the handshake must echo one of them.
      handleProtocols: (protocols) => (protocols.has('bearer') ? 'bearer' : protocols.has('token') ? 'token' : false),
      // Not in @types/ws yet: how long a peer gets to finish the closing handshake before being destroyed.
      ...({ closeTimeout: config.closeTimeoutMs } as object),
    });

    const gw = this;
    this.onSocketMessage = function (data, isBinary) {
      if (this.session !== undefined) gw.onFrame(this.session, data, isBinary);
    };
    this.onSocketPong = function () {
      if (this.session !== undefined) this.session.alive = true;
    };
    this.onSocketError = function (err) {
      gw.onSocketFailure(this, err);
    };
    this.onSocketClose = function (code, reason) {
      if (this.session !== undefined) gw.onClose(this.session, code, reason);
    };
    this.onTcpClose = function () {
      if (this.countedAddress !== undefined) gw.perAddress.release(this.countedAddress);
    };
    this.onHandshakeTimeout = function () {
      gw.counters.rejected('handshake-timeout').inc();
      this.destroy();
    };
  }

  /** The bound port, once started (useful with `port: 0`). */
  get port(): number {
    const addr = this.server.address();
    return typeof addr === 'object' && addr !== null ? addr.port : 0;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.publicKey = this.deps.publicKey ?? this.loadNodeKey();
    if (this.deps.revocations !== undefined) {
      this.revocations = this.deps.revocations;
      this.verifyOptions = {
        revocations: this.deps.revocations,
        maxTtlSeconds: parseMaxTokenTtl(this.config.maxTokenTtl),
      };
    } else {
      this.policy = new TokenPolicy(this.config, this.nodeKeyFile(), this.log);
      await this.policy.start();
      this.revocations = this.policy.revocations;
      this.verifyOptions = this.policy.verifyOptions;
    }
    this.tokenFn = this.deps.tokenSource ?? gatewayTokenSource(this.config, 'ws');
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ port: this.config.port, host: this.config.host, backlog: 4096 }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    await this.core.start();
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(1, this.config.pingIntervalMs / SWEEP_STEPS));
    this.sweepTimer.unref();
    this.tokenTimer = setInterval(() => this.sweepTokens(), this.config.tokenSweepMs);
    this.tokenTimer.unref();
    this.log.info({ port: this.port, path: NODE_PATH }, 'ws gateway listening');
  }

  /**
   * Stops accepting, closes the broker link, then closes every node with 1001. The link goes first on
   * purpose: the nodes are not reported `out`, so the broker keeps them online for its grace period, and a
   * gateway that restarts within it (its nodes reconnect) causes no out/new flap for clients.
   * Safe to call twice.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (!this.started) return;
    clearInterval(this.sweepTimer);
    clearInterval(this.tokenTimer);
    this.policy?.stop();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve({ result: 'error', reason: 'gateway shutting down' });
      this.pending.delete(id);
    }
    await this.core.stop();
    for (const ws of this.wss.clients) ws.close(CloseCode.GoingAway, 'gateway shutting down');
    // ws destroys sockets that do not finish the closing handshake within closeTimeoutMs; this is the backstop.
    const limit = setTimeout(() => {
      for (const ws of this.wss.clients) ws.terminate();
      this.server.closeAllConnections();
    }, this.config.closeTimeoutMs + 500);
    limit.unref();
    await closed;
    clearTimeout(limit);
    this.log.info('ws gateway stopped');
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP: /healthz and /metrics; everything else is 404.

  private onHttp(req: IncomingMessage, res: ServerResponse): void {
    const path = pathOf(req);
    if (req.method === 'GET' && path === '/healthz') {
      const body = JSON.stringify({
        status: 'ok',
        nodes: this.sessions.size,
        broker: this.core.link.connected ? 'connected' : 'disconnected',
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      return;
    }
    if (req.method === 'GET' && path === '/metrics') {
      if (this.config.publicMetrics) {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.metrics.render());
        return;
      }
      this.serveMetrics(req, res).catch((err: unknown) => {
        this.log.error({ err }, '/metrics failed');
        if (!res.headersSent) res.writeHead(500).end();
      });
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end(`no resource at ${path}\n`);
  }

  /** /metrics with a token, like the broker's: counters reveal node counts and traffic. */
  private async serveMetrics(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { token } = extractToken(req.headers, undefined);
    const result =
      this.publicKey === undefined
        ? ({ ok: false, reason: 'no-key' } as const)
        : await verifyToken(this.publicKey, token, METRICS_ROLES, this.verifyOptions);
    if (result.ok) {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.metrics.render());
      return;
    }
    const reason = result.reason;
    this.counters.rejected(`metrics-auth-${reason}`).inc();
    res
      .writeHead(401, {
        'content-type': 'text/plain',
        'www-authenticate': `Bearer error="invalid_token", error_description="token ${reason}"`,
      })
      .end(`token ${reason}\n`);
  }

  // ---------------------------------------------------------------------------------------------
  // Connections

  /**
   * Every TCP connection: counted per address (refused with 429 beyond the cap, before any request is read),
   * and given --handshake-timeout-ms of idleness before it is closed.
   */
  private onConnection(socket: CountedSocket): void {
    const address = socket.remoteAddress ?? 'unknown';
    if (!this.perAddress.acquire(address)) {
      this.counters.rejected('max-connections-per-address').inc();
      this.log.debug({ remote: address }, 'too many connections from one address; refused');
      socket.on('error', onUpgradeSocketError);
      refuseUpgrade(socket, 429, `more than ${this.config.maxConnectionsPerAddress} connections from this address`);
      return;
    }
    socket.countedAddress = address;
    socket.once('close', this.onTcpClose);
    socket.setTimeout(this.config.handshakeTimeoutMs);
    socket.on('timeout', this.onHandshakeTimeout);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', onUpgradeSocketError);
    this.admit(req, socket, head).catch((err) => {
      this.log.error({ err }, 'node upgrade failed');
      refuseUpgrade(socket, 400, 'upgrade failed');
    });
  }

  private async admit(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const path = pathOf(req);
    if (path !== NODE_PATH) {
      this.counters.rejected('unknown-path').inc();
      return refuseUpgrade(socket, 404, `no WebSocket endpoint at ${path}; nodes connect to ${NODE_PATH}`);
    }
    const identity = await this.identify(req);
    if ('refuse' in identity) {
      this.counters.rejected(identity.counter).inc();
      this.log.warn({ reason: identity.refuse, remote: req.socket.remoteAddress }, 'node refused');
      return refuseUpgrade(socket, identity.status, identity.refuse);
    }
    const current = this.sessions.get(identity.uid);
    if (current?.authenticated && !identity.authenticated) {
      // An anonymous connection naming itself after a token-holding node must not hijack it.
      this.counters.rejected('id-taken').inc();
      return refuseUpgrade(socket, 403, `node id ${identity.uid} belongs to an authenticated node`);
    }
    if (!this.started || this.stopping) return refuseUpgrade(socket, 503, 'gateway shutting down');
    const known = this.core.has(identity.uid) || current !== undefined;
    if (!known && this.core.size >= this.config.maxNodes) {
      this.counters.refused('max-nodes').inc();
      return refuseUpgrade(socket, 503, `gateway full (${this.config.maxNodes} nodes)`);
    }
    // Anonymous nodes pick their ids: new ids are rate-limited per address. A token names one id the operator
    // issued, so tokens themselves bound what an authenticated device can bring.
    if (!known && !identity.authenticated && !this.newNodes.take(req.socket.remoteAddress ?? 'unknown')) {
      this.counters.rejected('new-node-rate').inc();
      return refuseUpgrade(socket, 429, `more than ${this.config.newNodesPerMinute} new nodes per minute`);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.adopt(ws, identity));
  }

  /** Who the node is: its token's subject, else (anonymous nodes allowed) `?id=` or a fresh uuid as in pyaiot. */
  private async identify(
    req: IncomingMessage,
  ): Promise<Identity | { refuse: string; status: 400 | 401 | 403 | 404 | 503; counter: string }> {
    const { token } = extractToken(req.headers, req.url);
    if (token === undefined && this.config.allowAnonymousNodes) {
      const id = queryParam(req.url, 'id');
      if (id === undefined) return { uid: randomUUID(), authenticated: false };
      const problem = isIdentifier(id);
      if (problem !== undefined) return { refuse: `id ${problem}`, status: 400, counter: 'bad-id' };
      return { uid: id, authenticated: false };
    }
    if (this.publicKey === undefined) {
      return { refuse: 'token cannot be verified (no key)', status: 401, counter: 'auth-no-key' };
    }
    const result = await verifyToken(this.publicKey, token, NODE_ROLES, this.verifyOptions);
    if (!result.ok) return { refuse: `token ${result.reason}`, status: 401, counter: `auth-${result.reason}` };
    const problem = isIdentifier(result.claims.sub);
    if (problem !== undefined) return { refuse: `token subject ${problem}`, status: 401, counter: 'auth-bad-sub' };
    const { exp, jti } = result.claims;
    return { uid: result.claims.sub, authenticated: true, expiresAt: exp === undefined ? undefined : exp * 1000, jti };
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
    const previous = this.sessions.get(uid);
    this.sessions.set(uid, session);
    if (previous !== undefined) {
      // The newer connection wins (the old one is usually a half-open link the device gave up on). The old
      // socket's close handler sees it is no longer current and reports nothing, so clients see no flap.
      this.counters.replaced.inc();
      this.log.info({ uid }, 'node reconnected; replacing its previous connection');
      this.failWrites(previous, 'replaced by a newer connection');
      previous.ws.close(CloseCode.Replaced, 'replaced by a newer connection');
    }
    // A known uid keeps its cached values (and the broker its online state); a new one is announced now,
    // as pyaiot did on open, and its values follow as the node answers the discover request. A token-holding
    // node proved its uid (the broker never hands such a uid to an unauthenticated protocol).
    if (!this.core.has(uid) && !this.core.nodeNew(uid, {}, authenticated ? 'token' : undefined)) {
      return this.reject(
        session,
        CloseCode.PolicyViolation,
        ErrorCode.LimitReached,
        `node refused: ${this.lastRefusal}`,
      );
    }
    ws.send(DISCOVER_FRAME);
    this.log.debug({ uid, authenticated }, 'node connected');
  }

  // ---------------------------------------------------------------------------------------------
  // Frames: one dispatcher, one handler per kind.

  private onFrame(session: NodeSession, data: RawData, isBinary: boolean): void {
    session.alive = true;
    this.counters.framesIn.inc();
    // A socket that is closing (refused, replaced) has had its say: later frames are dropped uncounted.
    if (session.ws.readyState !== NodeSocket.OPEN) return;
    const now = Date.now();
    // Between exp and the next token sweep, nothing the node sends is processed.
    if (now >= session.expiresAt) return this.endSession(session, 'token expired');
    if (!session.admit(now)) {
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
          if (!this.core.nodeUpdate(uid, endpoint, frame.data[endpoint])) {
            const reason =
              this.lastRefusal === 'max-resources'
                ? `more than ${this.config.maxResourcesPerNode} resources`
                : `value refused: ${this.lastRefusal}`;
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
      default: {
        const never: never = frame;
        return never;
      }
    }
  }

  private onAck(session: NodeSession, ack: NodeAck): void {
    session.acks = true;
    const p = this.pending.get(ack.id);
    if (p === undefined || p.session !== session) {
      this.counters.rejected('unknown-ack').inc();
      this.log.debug({ uid: session.uid, id: ack.id }, 'ack for an unknown or expired write');
      return;
    }
    this.pending.delete(ack.id);
    clearTimeout(p.timer);
    p.resolve(ack.result === 'ok' ? { result: 'ok' } : { result: 'error', reason: ack.reason ?? 'node refused' });
  }

  private reject(session: NodeSession, close: number, code: string, reason: string): void {
    this.counters.rejected(code).inc();
    this.core.stats.error(code); // [gw-reports]
    this.log.warn({ uid: session.uid, code, reason }, 'bad frame from node; closing');
    session.ws.close(close, reason.slice(0, 120));
  }

  private onSocketFailure(ws: NodeSocket, err: Error & { code?: string }): void {
    // ws reports an oversized frame as an error and then closes with 1009 itself (RFC 6455 §7.4.1).
    const reason = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? ErrorCode.TooBig : (err.code ?? 'socket-error');
    this.counters.rejected(reason).inc();
    this.log.warn({ uid: ws.session?.uid, code: err.code, err: err.message }, 'node socket error');
  }

  private onClose(session: NodeSession, code: number, reason: Buffer): void {
    this.failWrites(session, 'node disconnected');
    // Only the current connection of an id reports the node gone; a replaced one closes silently.
    if (this.sessions.get(session.uid) !== session) return;
    this.sessions.delete(session.uid);
    // While stopping, nothing is reported: the broker's grace period decides (see stop()).
    if (this.stopping) return;
    this.counters.outs(session.outReason).inc();
    this.core.nodeOut(session.uid, session.outReason);
    this.log.debug({ uid: session.uid, code, reason: reason.toString(), out: session.outReason }, 'node gone');
  }

  // ---------------------------------------------------------------------------------------------
  // [gw-reports] Actions from the broker

  /**
   * rediscover: the node is sent pyaiot's discover request again (as on connect), so it reports every resource
   * value afresh. forget: the node's connection is closed (1000) and it goes out with reason `removed`; a node
   * that reconnects is announced again.
   */
  private actions(): ActionHandler {
    return {
      rediscover: (uid) => {
        const sessions = uid === undefined ? [...this.sessions.values()] : [this.sessions.get(uid)];
        if (sessions[0] === undefined && uid !== undefined) return unknownNode(uid);
        let sent = 0;
        for (const session of sessions) {
          if (session?.ws.readyState !== NodeSocket.OPEN) continue;
          session.ws.send(DISCOVER_FRAME);
          sent++;
        }
        return { result: 'ok', detail: { nodes: sent } };
      },
      forget: (uid) => {
        const session = this.sessions.get(uid);
        if (session === undefined) return unknownNode(uid);
        session.outReason = 'removed';
        this.failWrites(session, 'node forgotten by an operator');
        session.ws.close(CloseCode.Normal, 'forgotten by an operator');
        return { result: 'ok' };
      },
      setLogLevel: (level) => setLoggerLevels(level, this.log),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Liveness: one sweep for all connections (RFC 6455 §5.5.2 ping, §5.5.3 pong).

  /**
   * Probes the next 1/SWEEP_STEPS of the sessions, so every session is probed once per ping interval and the
   * pings go out evenly spread over it.
   */
  private sweep(): void {
    if (this.sweepCursor === undefined) {
      // With few sessions a round finishes early; waiting for the interval keeps the pong deadline one interval.
      const now = Date.now();
      if (now - this.roundStartedAt < this.config.pingIntervalMs * (1 - 0.5 / SWEEP_STEPS)) return;
      this.roundStartedAt = now;
      this.sweepCursor = this.sessions.values();
    }
    let budget = Math.ceil(this.sessions.size / SWEEP_STEPS);
    while (budget > 0) {
      const next = this.sweepCursor.next();
      if (next.done) {
        this.sweepCursor = undefined;
        return;
      }
      this.probe(next.value);
      budget--;
    }
  }

  private probe(session: NodeSession): void {
    if (!session.alive) {
      this.log.info({ uid: session.uid }, 'node stopped answering pings; dropping it');
      session.outReason = 'timeout';
      session.ws.terminate();
      return;
    }
    session.alive = false;
    if (session.ws.readyState === NodeSocket.OPEN) session.ws.ping();
  }

  /**
   * The broker refused a node this gateway announced (the core has forgotten it, so it is never replayed).
   * MYC_ERR_DUPLICATE_UID: another gateway (or worker) holds the uid, e.g. the device reconnected elsewhere
   * before the old link died; the node is closed with 4409 and claims the uid again when it reconnects.
   * Any other refusal naming a uid (a frame the broker found bad): closed with 1008 and the code.
   */
  private onBrokerRefusal(code: string, uid: string | undefined): void {
    if (uid === undefined || code === ErrorCode.NotOwner) return;
    const session = this.sessions.get(uid);
    if (session === undefined) return;
    this.counters.rejected(`broker-${code}`).inc();
    this.log.info({ uid, code }, 'broker refused the node; closing it');
    // Not reported out: the broker does not hold this node for us.
    this.sessions.delete(uid);
    this.failWrites(session, 'node refused by the broker');
    if (code === ErrorCode.DuplicateUid) session.ws.close(CloseCode.UidTaken, 'uid held by another gateway');
    else session.ws.close(CloseCode.PolicyViolation, `refused by the broker: ${code}`);
  }

  // ---------------------------------------------------------------------------------------------
  // Token lifetime: one sweep for all sessions, every --token-sweep-ms (no timer per connection).

  private sweepTokens(): void {
    const now = Date.now();
    const revocations = this.revocations;
    for (const session of this.sessions.values()) {
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
    this.failWrites(session, reason);
    session.ws.close(CloseCode.TokenExpired, reason);
  }

  // ---------------------------------------------------------------------------------------------
  // Writes from the broker

  private write(uid: string, endpoint: string, payload: Json): Promise<WriteOutcome> {
    const outcome = this.deliver(uid, endpoint, payload);
    if (outcome instanceof Promise) {
      return outcome.then((o) => {
        this.counters.writes(o.result).inc();
        return o;
      });
    }
    this.counters.writes(outcome.result).inc();
    return Promise.resolve(outcome);
  }

  private deliver(uid: string, endpoint: string, payload: Json): WriteOutcome | Promise<WriteOutcome> {
    const session = this.sessions.get(uid);
    if (session === undefined || session.ws.readyState !== NodeSocket.OPEN) {
      return { result: 'error', reason: 'node-offline' };
    }
    if (session.ws.bufferedAmount > this.config.nodeBufferBytes) return { result: 'error', reason: 'node-busy' };
    this.writeSeq = (this.writeSeq + 1) % Number.MAX_SAFE_INTEGER;
    const id = this.writeSeq.toString(36);
    session.ws.send(writeFrame(endpoint, payload, id));
    // A node that never acknowledges (pyaiot's) gets `delivered` at once: the frame was handed to its socket.
    if (!session.acks) return { result: 'delivered' };
    return new Promise<WriteOutcome>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ result: 'timeout', reason: `no ack within ${this.config.writeTimeoutMs} ms` });
      }, this.config.writeTimeoutMs);
      timer.unref();
      this.pending.set(id, { session, resolve, timer });
    });
  }

  private failWrites(session: NodeSession, reason: string): void {
    if (this.pending.size === 0) return;
    for (const [id, p] of this.pending) {
      if (p.session !== session) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.resolve({ result: 'error', reason });
    }
  }

  // ---------------------------------------------------------------------------------------------

  private brokerToken(): Promise<string> {
    if (this.tokenFn === undefined) return Promise.reject(new Error('gateway not started'));
    return this.tokenFn();
  }

  private nodeKeyFile(): string {
    return this.config.nodeKeyFile ?? this.config.keyFile ?? defaultKeyFile();
  }

  private loadNodeKey(): KeyObject | undefined {
    const keyFile = this.nodeKeyFile();
    try {
      return readPublicKey(keyFile);
    } catch (err) {
      if (this.config.allowAnonymousNodes) {
        this.log.warn({ keyFile }, 'no key to verify node tokens: only anonymous nodes can connect');
        return undefined;
      }
      throw new MyceliumError(ErrorCode.Config, `cannot verify node tokens: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
}

/** A socket error before the upgrade completes (peer reset) must not crash the process; ws handles later ones. */
function onUpgradeSocketError(): void {}

/** Who a node is, from its token (or, anonymous, from ?id= or a fresh uuid). */
interface Identity {
  uid: string;
  authenticated: boolean;
  /** Token expiry in ms since the epoch; undefined for anonymous nodes. */
  expiresAt?: number;
  jti?: string;
}

function queryParam(url: string | undefined, name: string): string | undefined {
  const q = url?.indexOf('?') ?? -1;
  if (url === undefined || q < 0) return undefined;
  return new URLSearchParams(url.slice(q + 1)).get(name) ?? undefined;
}
