// The MQTT broker the gateway embeds when no --mqtt-url is given (aedes on a TCP port), so the system runs with
// no external server. It checks node tokens at CONNECT, applies the per-node ACL (acl.ts), bounds packet size,
// rate-limits new node ids per source address, and ends sessions whose token expired or was revoked (one sweep
// timer for all clients, not one per connection).
// The gateway itself does not connect through a socket: it uses aedes' in-process publish/subscribe, which
// bypasses authentication and the ACL (see transport.ts).
import type { KeyObject } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Metrics } from '../../services/common/metrics.ts';
import type { Logger } from '../../services/common/log.ts';
import { type VerifyOptions, verifyToken } from '../../services/common/tokens.ts';
import { isApiKeyText } from '../../services/accounts/protocol.ts';
import type { NodeKeyChecks, NodeKeyResult } from '../../services/common/token-checks.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import { mayPublish, maySubscribe } from './acl.ts';
import { GuardedConnection, type GuardRefusal } from './frame-guard.ts';
import { parseCheckPayload } from './codec.ts';
import { nodeIdProblem, parseNodeTopic, TOPIC_NODE_CHECK } from './topics.ts';

/** CONNACK return codes, MQTT 3.1.1 §3.2.2.3 (Table 3.1). */
export const ConnackCode = {
  IdentifierRejected: 2,
  /** [accounts] A device key nobody could check (the broker link is down): try later, fail closed. */
  ServerUnavailable: 3,
  BadUsernameOrPassword: 4,
  NotAuthorized: 5,
} as const;

export interface EmbeddedBrokerOptions {
  port: number;
  host: string;
  /** Verification key for node tokens; undefined = anonymous nodes accepted (pyaiot style, no ACL). */
  publicKey?: KeyObject;
  /** Largest remaining length of an inbound packet (bigger: connection closed). */
  maxPacketBytes: number;
  /** How long a new connection may take to send CONNECT. */
  connectTimeoutMs: number;
  log: Logger;
  metrics: Metrics;
  /** How often sessions are checked against their token's exp and the revocation list. */
  tokenSweepMs: number;
  /** Revoked token ids (`mycelium token revoke`); a session whose jti is revoked is closed at the next sweep. */
  revocations?: Revocations;
  /** Passed to verifyToken at CONNECT: the revocation list and the maximum token lifetime per role. */
  verifyOptions?: VerifyOptions;
  /**
   * Asked before a publish that names a node id: false when the id is new to the gateway and its source address
   * is over --new-nodes-per-minute. The publish is then refused and the connection closed ([MQTT-3.3.5-2]).
   */
  admitNode?: (nodeId: string, address: string) => boolean;
  /** [accounts] Device API keys as the password, checked through the broker link; absent: keys are refused. */
  nodeKeys?: NodeKeyChecks;
}

/** What the gateways need of a revocation list (services/common/revocations.ts provides one). */
export interface Revocations {
  isRevoked(jti?: string): boolean;
}

/** The token a session was opened with: when it ends, and its id for revocation. */
interface TokenSession {
  exp?: number;
  jti?: string;
}

export type RefusalReason =
  | 'missing-credentials'
  | 'bad-username'
  | 'client-id-mismatch'
  | `token-${string}`
  | `key-${string}`
  | 'token-subject-mismatch'
  | 'acl-publish'
  | 'acl-subscribe'
  | 'new-node-rate'
  | 'session-token-expired'
  | 'session-token-revoked'
  | GuardRefusal;

const SYS_PREFIX = '$SYS';
/**
 * Pending TCP connections the kernel may queue (capped by net.core.somaxconn). Node's default of 511 overflows
 * when thousands of nodes reconnect at once after a gateway restart, and each overflow costs a node a SYN retry.
 */
export const LISTEN_BACKLOG = 4096;

export class EmbeddedBroker {
  private aedesInstance?: Aedes;
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  /** The node id each authenticated client proved with its token. */
  private readonly nodeIds = new WeakMap<Client, string>();
  /**
   * The token of each client that authenticated with one, from its CONNACK until it is unregistered ('client'
   * to 'clientDisconnect', which aedes pairs); walked by the token sweep. A client whose connection closed while
   * its token was being verified never gets either event: it stays in `verified` (a WeakMap) and is collected.
   */
  private readonly tokens = new Map<Client, TokenSession>();
  private readonly verified = new WeakMap<Client, TokenSession>();
  private tokenTimer?: NodeJS.Timeout;
  /** Refusals already logged at warn: a flood is logged once per reason, then only counted. */
  private readonly warned = new Set<RefusalReason>();
  private readonly refused: (reason: RefusalReason) => { inc(n?: number): void };
  private readonly clientErrors;
  private readonly log: Logger;

  constructor(private readonly options: EmbeddedBrokerOptions) {
    this.log = options.log.child({ component: 'mqtt-broker' });
    this.refused = options.metrics.counterFamily(
      'broker_refused_total',
      'connections, publishes and subscriptions the embedded MQTT broker refused, by reason',
      'reason',
    );
    this.clientErrors = options.metrics.counter(
      'broker_client_errors_total',
      'MQTT connections the embedded broker closed on a protocol error',
    );
    options.metrics.gauge(
      'broker_token_sessions',
      'MQTT clients whose token the embedded broker watches for exp and revocation',
      () => this.tokens.size,
    );
    options.metrics.gauge(
      'broker_clients',
      'MQTT clients connected to the embedded broker',
      () => this.aedesInstance?.connectedClients ?? 0,
    );
  }

  get anonymous(): boolean {
    return this.options.publicKey === undefined;
  }

  /** The aedes instance, for the gateway's in-process transport. */
  get aedes(): Aedes {
    if (this.aedesInstance === undefined) throw new Error('embedded MQTT broker not started');
    return this.aedesInstance;
  }

  /** The TCP port bound (useful when started on port 0). */
  get port(): number {
    const addr = this.server?.address();
    return typeof addr === 'object' && addr !== null ? addr.port : 0;
  }

  async start(): Promise<void> {
    if (this.aedesInstance !== undefined) return;
    const aedes = await Aedes.createBroker({
      connectTimeout: this.options.connectTimeoutMs,
      authenticate: (client, username, password, done) => this.authenticate(client, username, password, done),
      authorizePublish: (client, packet, done) => this.authorizePublish(client, packet, done),
      authorizeSubscribe: (client, sub, done) => this.authorizeSubscribe(client, sub, done),
    });
    this.aedesInstance = aedes;
    aedes.on('clientError', (client, err) => {
      this.clientErrors.inc();
      this.log.debug({ clientId: client.id, err: err.message }, 'MQTT client error; connection closed');
    });
    aedes.on('connectionError', (_client, err) => {
      this.clientErrors.inc();
      this.log.debug({ err: err.message }, 'MQTT connection error before CONNECT completed');
    });
    aedes.on('client', (client) => {
      const session = this.verified.get(client);
      if (session !== undefined) this.tokens.set(client, session);
    });
    aedes.on('clientDisconnect', (client) => this.tokens.delete(client));
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const busy = err.code === 'EADDRINUSE' || err.code === 'EACCES';
        reject(
          busy
            ? new MyceliumError(
                ErrorCode.Config,
                `MQTT port ${this.options.port} ${err.code === 'EADDRINUSE' ? 'is already in use' : 'needs privileges'}` +
                  ' (choose another with --mqtt-port, or use an external broker with --mqtt-url)',
                { cause: err },
              )
            : err,
        );
      });
      server.listen(this.options.port, this.options.host, LISTEN_BACKLOG, () => {
        server.off('error', reject);
        resolve();
      });
    });
    if (!this.anonymous) {
      this.tokenTimer = setInterval(() => this.sweepTokens(), this.options.tokenSweepMs);
      this.tokenTimer.unref();
    }
    this.log.info(
      { port: this.port, host: this.options.host, auth: this.anonymous ? 'anonymous' : 'token' },
      'embedded MQTT broker listening',
    );
  }

  async stop(): Promise<void> {
    clearInterval(this.tokenTimer);
    this.tokens.clear();
    const server = this.server;
    const aedes = this.aedesInstance;
    this.server = undefined;
    this.aedesInstance = undefined;
    if (server !== undefined) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => (aedes ? aedes.close(() => resolve()) : resolve()));
      for (const s of this.sockets) s.destroy();
      await closed;
    } else if (aedes !== undefined) {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
    }
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.setNoDelay(true);
    const conn = new GuardedConnection(socket, this.options.maxPacketBytes, (reason) => {
      this.refused(reason).inc();
      this.log.warn(
        { remote: socket.remoteAddress, reason, limit: this.options.maxPacketBytes },
        'MQTT packet refused',
      );
    });
    this.aedesInstance?.handle(conn);
  }

  private authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    if (this.anonymous) return done(null, true);
    const refuse = (code: number, reason: RefusalReason) => {
      this.refused(reason).inc();
      this.log.info({ clientId: client.id, username, reason }, 'MQTT connection refused');
      done(Object.assign(new Error(reason), { returnCode: code }) as AuthenticateError, null);
    };
    if (username === undefined || password === undefined || password.length === 0) {
      return refuse(ConnackCode.NotAuthorized, 'missing-credentials');
    }
    if (nodeIdProblem(username) !== undefined) return refuse(ConnackCode.BadUsernameOrPassword, 'bad-username');
    // A client id is a session key: one client taking another's id would disconnect it ([MQTT-3.1.4-2]).
    // An authenticated node may therefore only use its own id, `<id>/<anything>` (a node id has no '/', so no
    // other node can pick it) or let the broker assign one (aedes_<uuid>).
    if (client.id !== username && !client.id.startsWith(`${username}/`) && !client.id.startsWith('aedes_')) {
      return refuse(ConnackCode.IdentifierRejected, 'client-id-mismatch');
    }
    const secret = password.toString('utf8');
    // [accounts] A device API key: the broker says which node it is bound to; it must be the user name's.
    if (isApiKeyText(secret)) {
      const keys = this.options.nodeKeys;
      if (keys === undefined) return refuse(ConnackCode.BadUsernameOrPassword, 'key-off');
      keys.verifyNodeKey(secret).then(
        (result) => this.onKeyChecked(client, username, result, refuse, done),
        (err: unknown) => {
          this.log.error({ err }, 'device key check failed');
          refuse(ConnackCode.ServerUnavailable, 'key-unavailable');
        },
      );
      return;
    }
    verifyToken(this.options.publicKey!, secret, ['node'], this.options.verifyOptions).then(
      (result) => {
        if (!result.ok) {
          // A token for another role is a valid credential without the right to connect here.
          return refuse(
            result.reason === 'wrong-role' ? ConnackCode.NotAuthorized : ConnackCode.BadUsernameOrPassword,
            `token-${result.reason}`,
          );
        }
        if (result.claims.sub !== username) return refuse(ConnackCode.NotAuthorized, 'token-subject-mismatch');
        this.nodeIds.set(client, username);
        this.verified.set(client, { exp: result.claims.exp, jti: result.claims.jti });
        done(null, true);
      },
      (err: unknown) => {
        this.log.error({ err }, 'token verification failed');
        refuse(ConnackCode.BadUsernameOrPassword, 'token-malformed');
      },
    );
  }

  private onKeyChecked(
    client: Client,
    username: string,
    result: NodeKeyResult,
    refuse: (code: number, reason: RefusalReason) => void,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    if (!result.ok) {
      // CONNACK 3 (Server unavailable, MQTT 3.1.1 §3.2.2.3) when nobody could check the key: the client retries.
      if (result.unavailable) return refuse(ConnackCode.ServerUnavailable, 'key-unavailable');
      const code = result.reason === 'wrong-org' ? ConnackCode.NotAuthorized : ConnackCode.BadUsernameOrPassword;
      return refuse(code, `key-${result.reason}`);
    }
    // A node's key names one node: using it under another id is refused like a token for another subject.
    if (result.node !== username) return refuse(ConnackCode.NotAuthorized, 'token-subject-mismatch');
    this.nodeIds.set(client, username);
    this.verified.set(client, { exp: result.exp, jti: result.jti });
    done(null, true);
  }

  private authorizePublish(client: Client | null, packet: PublishPacket, done: (error?: Error | null) => void): void {
    if (packet.topic.startsWith(SYS_PREFIX)) return done(new Error(`${SYS_PREFIX} topics are reserved`));
    // Nothing in this protocol needs retained messages, and each one would stay in the broker's memory.
    packet.retain = false;
    if (client === null) return done(null);
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const session = this.tokens.get(client) ?? this.verified.get(client);
    // Between exp and the next sweep, nothing the client sends is processed.
    if (session !== undefined && this.ended(session) !== undefined) {
      this.sweepTokens();
      return done(new Error('token no longer valid'));
    }
    if (this.anonymous) {
      // Only anonymous nodes are rate-limited: a token names one node id, issued by the operator, so the tokens
      // themselves bound how many ids an authenticated client can bring.
      if (this.admitPublisher(client, packet.topic, payload)) return done(null);
      this.count('new-node-rate', { clientId: client.id, topic: packet.topic }, 'new node ids over the rate; closed');
      return done(new Error('too many new node ids from this address'));
    }
    const nodeId = this.nodeIds.get(client);
    const decision =
      nodeId === undefined
        ? { ok: false as const, reason: 'not authenticated' }
        : mayPublish(nodeId, packet.topic, payload);
    if (decision.ok) return done(null);
    this.refused('acl-publish').inc();
    this.log.warn({ nodeId, topic: packet.topic, reason: decision.reason }, 'publish refused; connection closed');
    // [MQTT-3.3.5-2]: an unauthorized PUBLISH cannot be answered; the server acks it or closes the connection.
    done(new Error(decision.reason));
  }

  private authorizeSubscribe(
    client: Client,
    sub: Subscription,
    done: (error: Error | null, subscription?: Subscription | null) => void,
  ): void {
    if (this.anonymous) return done(null, sub);
    const nodeId = this.nodeIds.get(client);
    const decision =
      nodeId === undefined ? { ok: false as const, reason: 'not authenticated' } : maySubscribe(nodeId, sub.topic);
    if (decision.ok) return done(null, sub);
    this.refused('acl-subscribe').inc();
    this.log.warn({ nodeId, filter: sub.topic, reason: decision.reason }, 'subscription refused');
    // [MQTT-3.9.3]: return code 0x80 (Failure) in the SUBACK for this filter; the connection stays up.
    done(null, null);
  }

  /** The node id a publish speaks for (topic level, or node/check's payload), checked against the new-node rate. */
  private admitPublisher(client: Client, topic: string, payload: Buffer): boolean {
    const admit = this.options.admitNode;
    if (admit === undefined) return true;
    let nodeId: string | undefined;
    if (topic === TOPIC_NODE_CHECK) {
      const check = parseCheckPayload(payload);
      nodeId = check.ok ? check.value : undefined;
    } else {
      const t = parseNodeTopic(topic);
      nodeId = t.kind === 'value' || t.kind === 'resources' ? t.id : undefined;
    }
    if (nodeId === undefined) return true;
    const conn = client.conn as unknown as { socket?: { remoteAddress?: string } };
    return admit(nodeId, conn.socket?.remoteAddress ?? 'unknown');
  }

  /** Why a token session must end now, or undefined while it is valid. */
  private ended(session: TokenSession): RefusalReason | undefined {
    if (session.exp !== undefined && session.exp * 1000 <= Date.now()) return 'session-token-expired';
    if (session.jti !== undefined && this.options.revocations?.isRevoked(session.jti)) return 'session-token-revoked';
    return undefined;
  }

  /**
   * One pass over the token sessions: a client whose token expired or was revoked is disconnected. MQTT 3.1.1
   * has no way to tell the client why ([MQTT-4.8.0-1]: closing the connection is the server's only answer).
   */
  private sweepTokens(): void {
    for (const [client, session] of this.tokens) {
      // Backstop for a close aedes did not pair with clientDisconnect (a session taken over, say).
      if (client.closed) {
        this.tokens.delete(client);
        continue;
      }
      const reason = this.ended(session);
      if (reason === undefined) continue;
      this.tokens.delete(client);
      this.count(reason, { clientId: client.id }, 'MQTT session ended: token no longer valid');
      client.close();
    }
  }

  private count(reason: RefusalReason, fields: Record<string, unknown>, msg: string): void {
    this.refused(reason).inc();
    if (this.warned.has(reason)) return this.log.debug({ ...fields, reason }, msg);
    this.warned.add(reason);
    this.log.warn({ ...fields, reason }, `${msg} (logged once per reason, then counted)`);
  }
}
