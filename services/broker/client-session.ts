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
import type { Broker } from './broker.ts';
import { rawSocket, textFrameOf } from './fanout.ts';

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

  constructor(
    private readonly broker: Broker,
    readonly ws: WebSocket,
    readonly claims: TokenClaims,
  ) {
    this.log = broker.log.child({ client: this.id, sub: claims.sub, role: claims.role });
    const { clientFramesPerSecond, clientFrameBurst } = broker.config;
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
      this.broker.counters.rejected(reason).inc();
      this.log.warn({ err: err.message }, 'client socket error');
    });
    this.ws.on('close', () => {
      this.closing = true;
      this.backlog = [];
      this.broker.clientGone(this);
      this.log.debug('client disconnected');
    });
    this.send({ type: 'hello', client: this.id, role: this.claims.role, broker: this.broker.id });
  }

  heartbeat(): void {
    if (!this.alive) {
      this.broker.counters.rejected('client-ping-timeout').inc();
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  /** Closes the session with 4401 when its token has expired or was revoked (finding 7 of issue 10). */
  checkToken(now: number): boolean {
    const ended = this.broker.tokenEnded(this.claims, now);
    if (ended === undefined) return true;
    if (!this.closing) {
      this.broker.counters.sessionsEnded(ended).inc();
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
    if (this.backlogBytes > this.broker.config.clientBufferBytes) return this.tooSlow();
    this.backlog.push(frame);
  }

  /** True (and the client dropped, 1013) when its unsent bytes exceed --client-buffer-bytes. */
  private overBuffer(): boolean {
    const socket = rawSocket(this.ws);
    if (socket === undefined || socket.writableLength <= this.broker.config.clientBufferBytes) return false;
    this.tooSlow();
    return true;
  }

  private tooSlow(): void {
    // Bounded memory: a client that cannot keep up is dropped; it reconnects and gets a fresh snapshot.
    this.broker.counters.rejected('slow-client').inc();
    this.close(1013, 'client too slow');
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    this.broker.counters.clientFramesIn.inc();
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
    this.broker.counters.rejected('rate-limited').inc();
    if (this.refusedInRow === 1) {
      this.log.warn('client over its frame rate; frames dropped');
      this.send({ type: 'error', code: ErrorCode.RateLimited, reason: 'too many frames; slow down' });
    } else if (this.refusedInRow >= this.broker.config.clientFrameBurst) {
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
      this.broker.counters.rejected('already-registered').inc();
      this.send({ type: 'error', code: ErrorCode.AlreadyRegistered, reason: 'this connection is already registered' });
      return;
    }
    this.state = 'syncing';
    const frames: BrokerToClientMessage[] = this.broker.snapshot();
    frames.push({ type: 'synced', nodes: this.broker.table.size });
    this.broker.register(this);
    this.streamSnapshot(frames, 0);
  }

  /** Writes snapshot frames while the socket's unsent bytes stay under the limit; resumes on `drain`. */
  private streamSnapshot(frames: BrokerToClientMessage[], from: number): void {
    const socket = rawSocket(this.ws);
    if (this.closing || socket === undefined || this.ws.readyState !== 1) return;
    const limit = this.broker.config.clientBufferBytes;
    let i = from;
    while (i < frames.length && socket.writableLength < limit) {
      const text = encode(frames[i++]);
      if (text === undefined) {
        this.broker.counters.rejected('unserializable').inc();
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
      this.broker.counters.rejected('forbidden-write').inc();
      this.log.warn({ uid, endpoint }, 'write refused: role may not write');
      this.send({ type: 'error', code: ErrorCode.Forbidden, reason: `role ${this.claims.role} may not write`, id });
      return;
    }
    const node = this.broker.table.get(uid);
    if (node === undefined || node.status === 'offline') {
      const reason = node === undefined ? 'unknown-node' : 'node-offline';
      this.broker.counters.rejected(reason).inc();
      this.send({ type: 'result', id, uid, endpoint, result: 'error', reason });
      return;
    }
    const outcome = await this.broker.writes.write(node.gateway, { uid, endpoint, payload });
    this.send({ type: 'result', id, uid, endpoint, ...outcome });
  }

  private reject(close: number, code: string, reason: string): void {
    this.broker.counters.rejected(code).inc();
    this.log.warn({ code, reason }, 'bad frame from client; closing');
    this.close(close, reason.slice(0, 120));
  }
}
