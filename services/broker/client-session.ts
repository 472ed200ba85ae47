// One web client on /ws. pyaiot semantics: the client registers with {"type":"new","data":"client"} and
// then gets a full snapshot followed by the live stream; writes are {"type":"update","data":{uid,endpoint,payload}}.
//
// Bounded per client (finding 5 of issue 10): one registration per connection, the snapshot streamed under the
// same buffer limit as live frames (--client-buffer-bytes), and a token bucket on the frames it sends.
import { randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import { KeyedRateLimiter } from '../common/limits.ts';
import type { Logger } from '../common/log.ts';
import type { TokenClaims } from '../common/tokens.ts';
import { CloseCode, ErrorCode } from '../protocol/errors.ts';
import { encode, parseClientFrame } from '../protocol/frames.ts';
import { type BrokerToClientMessage, type ClUpdate, canWrite } from '../protocol/messages.ts';
import { rawSocket, textFrameOf } from './fanout.ts';
import type { BrokerCounters, NodeReader, TokenCheck } from './ports.ts';
import type { WriteRouter } from './writes.ts';
// [gw-reports] gateway actions from the page (the dashboard's buttons)
import type { ActionName, ClGatewayAction } from '../protocol/gateway-reports.ts';
import { type ActionRouter, actionRequestProblem } from './gateway-actions.ts';
// [console] console requests from the page or a script (issue 12)
import type { ExecRequestFrame } from '../protocol/console-messages.ts';
import { exitOf } from '../protocol/console-messages.ts';
import type { ExecHandle, ExecRouter } from './exec-router.ts';

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
  tokens: TokenCheck;
  clients: ClientDirectory;
  config: ClientLimits;
  /** [gw-reports] */
  actions: Pick<ActionRouter, 'request'>;
  /** [console] Console requests; absent: refused. */
  exec?: Pick<ExecRouter, 'request'>;
}

/** The broker's registered clients, as a session sees them. */
export interface ClientDirectory {
  /** Every node as `new`/`update` frames, and every gateway report, taken at one instant (the snapshot). */
  snapshot(): BrokerToClientMessage[];
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
  private readonly log: Logger;
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

  constructor(
    private readonly deps: ClientSessionDeps,
    readonly ws: WebSocket,
    readonly claims: TokenClaims,
  ) {
    this.log = deps.log.child({ client: this.id, sub: claims.sub, role: claims.role });
    const { clientFramesPerSecond, clientFrameBurst } = deps.config;
    this.limiter = new KeyedRateLimiter({ perSecond: clientFramesPerSecond, burst: clientFrameBurst, maxKeys: 1 });
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
    const frames: BrokerToClientMessage[] = this.deps.clients.snapshot();
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
    const node = this.deps.table.get(uid);
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
