// One web client on /ws. pyaiot semantics: the client registers with {"type":"new","data":"client"} and
// then gets a full snapshot followed by the live stream; writes are {"type":"update","data":{uid,endpoint,payload}}.
import { randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import type { Logger } from '../common/log.ts';
import type { TokenClaims } from '../common/tokens.ts';
import { CloseCode, ErrorCode } from '../protocol/errors.ts';
import { encode, parseClientFrame } from '../protocol/frames.ts';
import { type BrokerToClientMessage, type ClUpdate, canWrite } from '../protocol/messages.ts';
import type { Broker } from './broker.ts';

export class ClientSession {
  readonly id = randomUUID();
  private readonly log: Logger;
  private alive = true;

  constructor(
    private readonly broker: Broker,
    readonly ws: WebSocket,
    readonly claims: TokenClaims,
  ) {
    this.log = broker.log.child({ client: this.id, sub: claims.sub, role: claims.role });
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

  send(msg: BrokerToClientMessage): void {
    if (this.ws.readyState !== 1) return;
    const frame = encode(msg);
    if (frame === undefined) return this.log.warn({ type: msg.type }, 'frame cannot be serialized; dropped');
    this.ws.send(frame);
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    this.broker.counters.clientFramesIn.inc();
    if (isBinary) return this.reject(CloseCode.UnsupportedData, 'binary-frame', 'only text frames are accepted');
    const parsed = parseClientFrame(data.toString());
    if (!parsed.ok) return this.reject(parsed.close, parsed.code, parsed.reason);
    const msg = parsed.value;
    switch (msg.type) {
      case 'new':
        return this.register();
      case 'update':
        void this.write(msg);
        return;
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  /** Snapshot first, then the live stream: both are driven from the same thread, so nothing is missed or doubled. */
  private register(): void {
    const frames = this.broker.snapshot();
    for (const f of frames) this.send(f);
    this.send({ type: 'synced', nodes: this.broker.table.size });
    this.broker.register(this);
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
