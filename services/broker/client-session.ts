// One web client on /ws. pyaiot semantics: the client registers with {"type":"new","data":"client"} and
// then gets a full snapshot followed by the live stream; writes are {"type":"update","data":{uid,endpoint,payload}}.
//
// Bounded per client (finding 5 of issue 10): one registration per connection, the snapshot streamed under the
// same buffer limit as live frames (--client-buffer-bytes), and a token bucket on the frames it sends.
import { randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import { KeyedRateLimiter } from '../common/limits.ts';
import type { Logger } from '../common/log.ts';
import type { TokenClaims, VerifyResult } from '../common/tokens.ts';
import { CloseCode, ErrorCode } from '../protocol/errors.ts';
import { encode, parseClientFrame } from '../protocol/frames.ts';
import { type BrokerToClientMessage, type ClToken, type ClUpdate, canWrite, type Role } from '../protocol/messages.ts';
import { rawSocket, textFrameOf } from './fanout.ts';
import type { BrokerCounters, NodeReader, TokenCheck } from './ports.ts';
import type { WriteRouter } from './writes.ts';
import { canSee, type OrgDirectory, type Scoped } from './scope.ts';
// [gw-reports] gateway actions from the page (the dashboard's buttons)
import type { ActionName, ClGatewayAction } from '../protocol/gateway-reports.ts';
import { type ActionRouter, actionRequestProblem } from './gateway-actions.ts';
// [console] console requests from the page or a script (issue 12)
import type { ExecRequestFrame } from '../protocol/console-messages.ts';
import { exitOf } from '../protocol/console-messages.ts';
import type { ExecHandle, ExecRouter } from './exec-router.ts';

/** The roles a /ws token may carry (at the upgrade and in a `token` frame). */
export const CLIENT_ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];

/**
 * [ws-renew] `token` frames one session may send: a burst of TOKEN_FRAME_BURST, then TOKEN_FRAMES_PER_MINUTE.
 * A page renews a 15-minute token once in 14 minutes; a burst of 5 covers retries and very short test lifetimes.
 * Beyond: MYC_ERR_RATE_LIMITED; TOKEN_FRAME_BURST refused in a row: closed with 1008 (each one costs a signature
 * check, or an accounts request for a key).
 */
export const TOKEN_FRAME_BURST = 5;
export const TOKEN_FRAMES_PER_MINUTE = 10;

/** [console] Most console requests one client may have in flight; beyond it, `busy`. */
export const MAX_EXECS_PER_CLIENT = 16;

/** What a client session is given: made once by the broker and shared by every client session. */
export interface ClientSessionDeps {
  brokerId: string;
  /** The broker's logger; each session takes a child of it. */
  log: Logger;
  counters: Pick<BrokerCounters, 'clientFramesIn' | 'rejected' | 'sessionsEnded'>;
  /** Read only: a write goes to the gateway the table names for the node. */
  table: NodeReader;
  writes: Pick<WriteRouter, 'write'>;
  /** The sweep's check, and [ws-renew] the upgrade's verification for a renewed token. */
  tokens: TokenCheck & TokenVerifier;
  clients: ClientDirectory;
  config: ClientLimits;
  /** [gw-reports] */
  actions: Pick<ActionRouter, 'request'>;
  /** [console] Console requests; absent: refused. */
  exec?: Pick<ExecRouter, 'request'>;
  /** [accounts] Which org owns a node or gateway: a client acts only on its own org's (scope.ts). */
  orgs?: OrgDirectory;
}

/** [ws-renew] The broker's token check at the upgrade: signature, expiry, revocation, role policy, API keys. */
export interface TokenVerifier {
  verify(token: string | undefined, roles: readonly Role[]): Promise<VerifyResult>;
}

/** The broker's registered clients, as a session sees them. */
export interface ClientDirectory {
  /** Every node as `new`/`update` frames, and every gateway report, taken at one instant (the snapshot). */
  snapshot(claims?: Scoped): BrokerToClientMessage[];
  /** From now on the client is sent every live event (queued while its snapshot streams). */
  register(client: ClientSession): void;
  /** The client's socket is gone. */
  clientGone(client: ClientSession): void;
}

/** The options that bound one client (finding 5 of issue 10). */
export interface ClientLimits {
  readonly clientFramesPerSecond: number;
  readonly clientFrameBurst: number;
  readonly clientBufferBytes: number;
}

/** `new` (not registered yet), `syncing` (snapshot streaming, live frames queued), `live`. */
type State = 'new' | 'syncing' | 'live';

export class ClientSession {
  readonly id = randomUUID();
  private log: Logger;
  private alive = true;
  private closing = false;
  private state: State = 'new';
  /** One bucket (key `frames`) for this connection's inbound frames. */
  private readonly limiter: KeyedRateLimiter;
  /** Frames refused by the rate limit since the last accepted one. */
  private refusedInRow = 0;
  /** Live frames that arrived while the snapshot was streaming; sent right after it, in order. */
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  /** [console] This client's console requests in flight, by its own ids. */
  private execs?: Map<string, ExecHandle>;
  /** [ws-renew] The claims of the token the session holds: the upgrade's, then each accepted `token` frame's. */
  private current: TokenClaims;
  /** [ws-renew] `token` frames, checked one after the other (an older token never lands after a newer one). */
  private renewals: Promise<void> = Promise.resolve();
  private tokenLimiter?: KeyedRateLimiter;
  private tokenRefusedInRow = 0;

  constructor(
    private readonly deps: ClientSessionDeps,
    readonly ws: WebSocket,
    claims: TokenClaims,
  ) {
    this.current = claims;
    this.log = deps.log.child({ client: this.id, sub: claims.sub, role: claims.role });
    const { clientFramesPerSecond, clientFrameBurst } = deps.config;
    this.limiter = new KeyedRateLimiter({ perSecond: clientFramesPerSecond, burst: clientFrameBurst, maxKeys: 1 });
  }

  /** The claims the session acts with; the sweep reads their exp and jti (a renewed token's once taken). */
  get claims(): TokenClaims {
    return this.current;
  }

  /** True once the snapshot is out: live frames go straight to the socket. */
  get live(): boolean {
    return this.state === 'live';
  }

  start(): void {
    this.log.debug('client connected');
    this.ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    this.ws.on('pong', () => {
      this.alive = true;
    });
    this.ws.on('error', (err: Error & { code?: string }) => {
      const reason = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? ErrorCode.TooBig : (err.code ?? 'socket-error');
      this.deps.counters.rejected(reason).inc();
      this.log.warn({ err: err.message }, 'client socket error');
    });
    this.ws.on('close', () => {
      this.closing = true;
      this.backlog = [];
      this.deps.clients.clientGone(this);
      // [console] nobody is left to read their output: the commands are cancelled (and audited as such).
      for (const h of this.execs?.values() ?? []) h.cancel();
      this.log.debug('client disconnected');
    });
    this.send({ type: 'hello', client: this.id, role: this.claims.role, broker: this.deps.brokerId });
  }

  heartbeat(): void {
    if (!this.alive) {
      this.deps.counters.rejected('client-ping-timeout').inc();
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  /** Closes the session with 4401 when its token has expired or was revoked (finding 7 of issue 10). */
  checkToken(now: number): boolean {
    const ended = this.deps.tokens.tokenEnded(this.claims, now);
    if (ended === undefined) return true;
    if (!this.closing) {
      this.deps.counters.sessionsEnded(ended).inc();
      this.log.info({ reason: ended }, 'client session closed: token ended');
      this.close(CloseCode.TokenExpired, `token ${ended}`);
    }
    return false;
  }

  send(msg: BrokerToClientMessage): void {
    if (this.closing || this.ws.readyState !== 1) return;
    if (this.overBuffer()) return;
    const frame = encode(msg);
    if (frame === undefined) return this.log.warn({ type: msg.type }, 'frame cannot be serialized; dropped');
    this.ws.send(frame);
  }

  close(code: number, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.backlog = [];
    this.ws.close(code, reason);
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  /** A live frame that arrived while the snapshot streams: held (bounded) until the snapshot is out. */
  queue(frame: Buffer): void {
    if (this.closing) return;
    this.backlogBytes += frame.length;
    if (this.backlogBytes > this.deps.config.clientBufferBytes) return this.tooSlow();
    this.backlog.push(frame);
  }

  /** True (and the client dropped, 1013) when its unsent bytes exceed --client-buffer-bytes. */
  private overBuffer(): boolean {
    const socket = rawSocket(this.ws);
    if (socket === undefined || socket.writableLength <= this.deps.config.clientBufferBytes) return false;
    this.tooSlow();
    return true;
  }

  private tooSlow(): void {
    // Bounded memory: a client that cannot keep up is dropped; it reconnects and gets a fresh snapshot.
    this.deps.counters.rejected('slow-client').inc();
    this.close(1013, 'client too slow');
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    this.deps.counters.clientFramesIn.inc();
    if (this.closing) return;
    if (!this.checkToken(Date.now())) return;
    if (!this.limiter.take('frames')) return this.rateLimited();
    this.refusedInRow = 0;
    if (isBinary) return this.reject(CloseCode.UnsupportedData, 'binary-frame', 'only text frames are accepted');
    const parsed = parseClientFrame(data.toString());
    if (!parsed.ok) return this.reject(parsed.close, parsed.code, parsed.reason);
    const msg = parsed.value;
    switch (msg.type) {
      case 'new':
        return this.register();
      case 'update':
        this.write(msg).catch((err: unknown) => this.log.error({ err }, 'write failed'));
        return;
      case 'token': // [ws-renew] limited before it is queued: at most a burst's worth waits for verification
        if (!this.admitToken(msg.id)) return;
        this.renewals = this.renewals
          .then(() => this.renewToken(msg))
          .catch((err: unknown) => this.log.error({ err }, 'token renewal failed'));
        return;
      case 'gateway-action': // [gw-reports]
        this.gatewayAction(msg).catch((err: unknown) => this.log.error({ err }, 'gateway action failed'));
        return;
      case 'exec': // [console]
      case 'exec-cancel':
      case 'pty-open':
      case 'pty-input':
      case 'pty-resize':
        return this.console(msg);
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  /**
   * Beyond --client-frames-per-second (with --client-frame-burst): the first refused frame is answered with
   * MYC_ERR_RATE_LIMITED; a client that keeps sending (a burst's worth refused in a row) is closed with 1008.
   */
  private rateLimited(): void {
    this.refusedInRow++;
    this.deps.counters.rejected('rate-limited').inc();
    if (this.refusedInRow === 1) {
      this.log.warn('client over its frame rate; frames dropped');
      this.send({ type: 'error', code: ErrorCode.RateLimited, reason: 'too many frames; slow down' });
    } else if (this.refusedInRow >= this.deps.config.clientFrameBurst) {
      this.reject(CloseCode.PolicyViolation, 'rate-limit-close', 'too many frames');
    }
  }

  /** [ws-renew] The token frame limit; false (answered, or the session closed) beyond it. */
  private admitToken(id: string | undefined): boolean {
    this.tokenLimiter ??= new KeyedRateLimiter({
      perSecond: TOKEN_FRAMES_PER_MINUTE / 60,
      burst: TOKEN_FRAME_BURST,
      maxKeys: 1,
    });
    if (this.tokenLimiter.take('token')) {
      this.tokenRefusedInRow = 0;
      return true;
    }
    this.deps.counters.rejected('token-rate-limited').inc();
    if (++this.tokenRefusedInRow >= TOKEN_FRAME_BURST) {
      this.reject(CloseCode.PolicyViolation, 'token-rate-limit-close', 'too many token frames');
      return false;
    }
    if (this.tokenRefusedInRow === 1) this.log.warn('client over its token frame rate; token frames refused');
    this.send({ type: 'error', code: ErrorCode.RateLimited, reason: 'too many token frames; slow down', id });
    return false;
  }

  /**
   * [ws-renew] A renewed token on the open session. Verified exactly as at the upgrade; taken only when it names
   * the same principal (same `sub`, same `org`, absent stays absent), and then wholly: its expiry and jti (the
   * sweep reads them) and its role, lower or higher, since the token is valid for that role now. A refused token
   * changes nothing: the session still ends at the old token's expiry.
   */
  private async renewToken(msg: ClToken): Promise<void> {
    if (this.closing) return; // queued behind a renewal that ended the session
    const id = msg.id;
    const result = await this.deps.tokens.verify(msg.token, CLIENT_ROLES);
    if (this.closing) return;
    if (!result.ok) {
      this.deps.counters.rejected(`token-${result.reason}`).inc();
      this.log.warn({ reason: result.reason }, 'token renewal refused');
      this.send({ type: 'error', code: ErrorCode.Unauthorized, reason: `token ${result.reason}`, id });
      return;
    }
    const next = result.claims;
    const before = this.current;
    if (next.sub !== before.sub || next.org !== before.org) {
      // Never the token's text: who it names is enough to investigate.
      this.deps.counters.rejected('token-other-principal').inc();
      this.log.warn(
        { tokenSub: next.sub, tokenOrg: next.org, org: before.org },
        'token renewal refused: another principal',
      );
      this.send({
        type: 'error',
        code: ErrorCode.Forbidden,
        reason: 'the token names another user or organisation',
        id,
      });
      return;
    }
    this.current = next;
    if (next.role !== before.role) {
      this.log = this.deps.log.child({ client: this.id, sub: next.sub, role: next.role });
      this.log.info({ from: before.role }, 'client role changed by a renewed token');
    } else this.log.debug({ exp: next.exp }, 'client token renewed');
    this.send({
      type: 'token-ok',
      role: next.role,
      ...(next.exp !== undefined ? { exp: next.exp } : {}),
      ...(id !== undefined ? { id } : {}),
    });
  }

  /**
   * Snapshot first, then the live stream. The snapshot is taken at one instant and the client is registered at
   * that same instant, so every event after it is queued for this client and sent after the snapshot: nothing
   * is missed or doubled. One registration per connection.
   */
  private register(): void {
    if (this.state !== 'new') {
      this.deps.counters.rejected('already-registered').inc();
      this.send({ type: 'error', code: ErrorCode.AlreadyRegistered, reason: 'this connection is already registered' });
      return;
    }
    this.state = 'syncing';
    const frames: BrokerToClientMessage[] = this.deps.clients.snapshot(this.claims);
    frames.push({ type: 'synced', nodes: this.deps.table.size });
    this.deps.clients.register(this);
    this.streamSnapshot(frames, 0);
  }

  /** Writes snapshot frames while the socket's unsent bytes stay under the limit; resumes on `drain`. */
  private streamSnapshot(frames: BrokerToClientMessage[], from: number): void {
    const socket = rawSocket(this.ws);
    if (this.closing || socket === undefined || this.ws.readyState !== 1) return;
    const limit = this.deps.config.clientBufferBytes;
    let i = from;
    while (i < frames.length && socket.writableLength < limit) {
      const text = encode(frames[i++]);
      if (text === undefined) {
        this.deps.counters.rejected('unserializable').inc();
        continue;
      }
      socket.write(textFrameOf(text).frame);
    }
    if (i < frames.length) {
      socket.once('drain', () => this.streamSnapshot(frames, i));
      return;
    }
    for (const frame of this.backlog) socket.write(frame);
    this.backlog = [];
    this.backlogBytes = 0;
    this.state = 'live';
  }

  private async write(msg: ClUpdate): Promise<void> {
    const id = msg.id ?? randomUUID();
    const { uid, endpoint, payload } = msg.data;
    if (!canWrite(this.claims.role)) {
      this.deps.counters.rejected('forbidden-write').inc();
      this.log.warn({ uid, endpoint }, 'write refused: role may not write');
      this.send({ type: 'error', code: ErrorCode.Forbidden, reason: `role ${this.claims.role} may not write`, id });
      return;
    }
    // [accounts] Another org's node is as unknown as a node that does not exist.
    const visible = this.deps.orgs === undefined || canSee(this.claims, this.deps.orgs.nodeOrg(uid));
    const node = visible ? this.deps.table.get(uid) : undefined;
    if (node === undefined || node.status === 'offline') {
      const reason = node === undefined ? 'unknown-node' : 'node-offline';
      this.deps.counters.rejected(reason).inc();
      this.send({ type: 'result', id, uid, endpoint, result: 'error', reason });
      return;
    }
    const outcome = await this.deps.writes.write(node.gateway, { uid, endpoint, payload }, this.claims.sub);
    this.send({ type: 'result', id, uid, endpoint, ...outcome });
  }

  /** [gw-reports] Same rules as POST /api/v1/gateways/:id/actions/:name: operator or admin, checked args. */
  private async gatewayAction(msg: ClGatewayAction): Promise<void> {
    const { id, gateway, name } = msg;
    if (!canWrite(this.claims.role)) {
      this.deps.counters.rejected('forbidden-action').inc();
      this.send({
        type: 'error',
        code: ErrorCode.Forbidden,
        reason: `role ${this.claims.role} may not act on gateways`,
        id,
      });
      return;
    }
    const problem = actionRequestProblem(name, msg.args);
    if (problem !== undefined) {
      this.deps.counters.rejected('bad-action').inc();
      const result = problem.code === 'MYC_ERR_UNKNOWN_ACTION' ? 'unknown-action' : 'bad-args';
      this.send({ type: 'action-result', id, gateway, name, result, reason: problem.message });
      return;
    }
    // [accounts] Another org's gateway answers as one that is not there.
    if (this.deps.orgs !== undefined && !canSee(this.claims, this.deps.orgs.gatewayOrg(gateway))) {
      this.deps.counters.rejected('other-org-gateway').inc();
      this.send({ type: 'action-result', id, gateway, name, result: 'unreachable', reason: `no gateway ${gateway}` });
      return;
    }
    this.log.info({ gateway, action: name, args: msg.args }, 'gateway action requested');
    const outcome = await this.deps.actions.request(gateway, name as ActionName, msg.args ?? {});
    this.send({ type: 'action-result', id, gateway, name, ...outcome });
  }

  /**
   * [console] A console frame. Output goes to this client only, under its own id. Requests are checked (role,
   * node, advertised commands) by the exec router; ids are this client's: an id of someone else's request
   * names nothing here.
   */
  private console(msg: ExecRequestFrame): void {
    this.execs ??= new Map();
    const execs = this.execs;
    if (msg.type === 'exec' || msg.type === 'pty-open') {
      if (execs.has(msg.id)) {
        this.deps.counters.rejected('duplicate-exec-id').inc();
        this.send({ type: 'error', code: ErrorCode.BadShape, reason: `exec id ${msg.id} is in use`, id: msg.id });
        return;
      }
      if (this.deps.exec === undefined || execs.size >= MAX_EXECS_PER_CLIENT) {
        const status = this.deps.exec === undefined ? 'refused' : 'busy';
        this.deps.counters.rejected(`exec-${status}`).inc();
        this.send(exitOf(msg.id, status, { reason: status === 'busy' ? 'too many requests in flight' : 'no console' }));
        return;
      }
      const requester = { sub: this.claims.sub, role: this.claims.role as 'viewer' | 'operator' | 'admin' };
      const id = msg.id;
      const handle = this.deps.exec.request(requester, msg, 'ws', (out) => this.send({ ...out, id }));
      execs.set(id, handle);
      handle.done.then(
        (exit) => {
          execs.delete(id);
          this.send({ ...exit, id });
        },
        (err: unknown) => this.log.error({ err }, 'exec failed'),
      );
      return;
    }
    const handle = execs.get(msg.id);
    if (handle === undefined) {
      this.deps.counters.rejected('unknown-exec-id').inc();
      this.send({ type: 'error', code: ErrorCode.BadShape, reason: 'no such request in flight', id: msg.id });
      return;
    }
    if (msg.type === 'exec-cancel') handle.cancel();
    else handle.send(msg);
  }

  private reject(close: number, code: string, reason: string): void {
    this.deps.counters.rejected(code).inc();
    this.log.warn({ code, reason }, 'bad frame from client; closing');
    this.close(close, reason.slice(0, 120));
  }
}
