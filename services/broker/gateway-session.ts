// One gateway connection on /gw: validates each frame, enforces node ownership, turns gateway frames into
// node events on the bus, and carries writes to the gateway and their results back.
import type { RawData, WebSocket } from 'ws';
import type { Logger } from '../common/log.ts';
import { CloseCode, ErrorCode } from '../protocol/errors.ts';
import { encode, parseGatewayFrame } from '../protocol/frames.ts';
import type { BrError, BrWrite, GatewayMessage, GatewayRecord, GwNew, GwResult } from '../protocol/messages.ts';
import type { Broker } from './broker.ts';
import type { NodeEvent } from './node-table.ts';

/** True when `obj` has exactly `n` own keys (cheaper than Object.keys on the hot path). */
function hasOnlyKeys(obj: object, n: number): boolean {
  let count = 0;
  for (const _ in obj) if (++count > n) return false;
  return count === n;
}

export class GatewaySession {
  /** Uids this connection announced and has not put `out`: the nodes it may update. */
  readonly nodes = new Set<string>();
  readonly connectedAt = Date.now();
  private readonly log: Logger;
  private alive = true;
  private closed = false;

  constructor(
    private readonly broker: Broker,
    readonly ws: WebSocket,
    readonly gatewayId: string,
  ) {
    this.log = broker.log.child({ gateway: gatewayId });
  }

  start(): void {
    this.log.info('gateway connected');
    this.broker.writes.serveGateway(this);
    this.ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    this.ws.on('pong', () => {
      this.alive = true;
    });
    this.ws.on('error', (err) => this.onSocketError(err));
    this.ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
  }

  record(): GatewayRecord {
    return { id: this.gatewayId, broker: this.broker.id, connectedAt: this.connectedAt, nodes: this.nodes.size };
  }

  /** Called every ping interval: a gateway that did not answer the previous ping is dropped (half-open link). */
  heartbeat(): void {
    if (!this.alive) {
      this.log.warn('gateway stopped answering pings');
      this.broker.counters.rejected('gateway-ping-timeout').inc();
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  send(msg: BrWrite | BrError): void {
    if (this.ws.readyState !== 1) return;
    const frame = encode(msg);
    if (frame === undefined) return this.log.warn({ type: msg.type }, 'frame cannot be serialized; dropped');
    this.ws.send(frame);
    this.broker.counters.toGateways.inc();
  }

  /**
   * Closes the connection. `lost` = the gateway is gone for good unless it comes back within the grace
   * period (false when it was replaced by a newer connection, which takes its nodes over).
   */
  close(code: number, reason: string, lost = true): void {
    if (!lost) this.closed = true;
    this.ws.close(code, reason);
    // A peer that does not finish the closing handshake must not hold the socket forever.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    this.broker.counters.gatewayFramesIn.inc();
    if (isBinary) return this.reject(CloseCode.UnsupportedData, 'binary-frame', 'only text frames are accepted');
    const text = data.toString();
    const parsed = parseGatewayFrame(text);
    if (!parsed.ok) return this.reject(parsed.close, parsed.code, parsed.reason);
    this.dispatch(parsed.value, text);
  }

  private dispatch(msg: GatewayMessage, text: string): void {
    switch (msg.type) {
      case 'new':
        return this.onNew(msg);
      case 'update': {
        if (!this.owns(msg.uid)) return;
        const event: NodeEvent = { type: 'update', uid: msg.uid, endpoint: msg.endpoint, data: msg.data };
        // The hot path: a gateway update with no extra fields is already the client frame, so its text is
        // forwarded as it came (validated above) instead of being serialized again.
        this.broker.publishEvent(event, hasOnlyKeys(msg, 4) ? text : undefined);
        return;
      }
      case 'out': {
        if (!this.owns(msg.uid)) return;
        this.nodes.delete(msg.uid);
        this.broker.publishEvent({ type: 'out', uid: msg.uid, reason: msg.reason, lastSeen: Date.now() });
        return;
      }
      case 'reset': {
        if (!this.owns(msg.uid)) return;
        this.broker.publishEvent({ type: 'reset', uid: msg.uid });
        return;
      }
      case 'result':
        return this.onResult(msg);
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  /**
   * Duplicate uids: a node belongs to the gateway that announced it while it is online. Another gateway
   * announcing the same uid is refused (error frame, counted) until the node goes offline; then the newcomer
   * takes it over. See docs/architecture.md, "Node ownership".
   */
  private onNew(msg: GwNew): void {
    const existing = this.broker.table.get(msg.uid);
    if (existing && existing.status === 'online' && existing.gateway !== this.gatewayId) {
      this.broker.counters.rejected('duplicate-uid').inc();
      this.log.warn({ uid: msg.uid, owner: existing.gateway }, 'refused a node uid owned by another gateway');
      this.send({
        type: 'error',
        code: ErrorCode.DuplicateUid,
        reason: `node ${msg.uid} is owned by gateway ${existing.gateway}`,
        uid: msg.uid,
      });
      return;
    }
    // A gateway re-announcing its own online node (after a reconnect) is not news for clients.
    const readopt = existing !== undefined && existing.status === 'online' && existing.gateway === this.gatewayId;
    this.nodes.add(msg.uid);
    if (!readopt) {
      this.broker.publishEvent({
        type: 'new',
        uid: msg.uid,
        gateway: this.gatewayId,
        protocol: msg.protocol,
        status: 'online',
        lastSeen: Date.now(),
      });
    }
    if (msg.data) {
      for (const endpoint in msg.data) {
        const data = msg.data[endpoint];
        if (readopt && JSON.stringify(existing.resources[endpoint]) === JSON.stringify(data)) continue;
        this.broker.publishEvent({ type: 'update', uid: msg.uid, endpoint, data });
      }
    }
  }

  private owns(uid: string): boolean {
    if (this.nodes.has(uid)) return true;
    this.broker.counters.rejected('not-owner').inc();
    this.log.warn({ uid }, 'gateway sent a frame for a node it does not own');
    this.send({
      type: 'error',
      code: ErrorCode.NotOwner,
      reason: `node ${uid} was not announced by this gateway`,
      uid,
    });
    return false;
  }

  private onResult(msg: GwResult): void {
    if (!this.broker.writes.complete(this, msg)) {
      this.broker.counters.rejected('unknown-write-id').inc();
      this.log.debug({ id: msg.id }, 'result for an unknown or expired write');
    }
  }

  private reject(close: number, code: string, reason: string): void {
    this.broker.counters.rejected(code).inc();
    this.log.warn({ code, reason }, 'bad frame from gateway; closing');
    this.close(close, reason.slice(0, 120));
  }

  private onSocketError(err: Error & { code?: string }): void {
    // ws reports an oversized frame as an error, then closes with 1009 itself.
    const reason = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? ErrorCode.TooBig : (err.code ?? 'socket-error');
    this.broker.counters.rejected(reason).inc();
    this.log.warn({ err: err.message, code: err.code }, 'gateway socket error');
  }

  private onClose(code: number, reason: string): void {
    this.broker.gatewayGone(this);
    this.broker.writes.unserveGateway(this);
    this.log.info({ code, reason }, 'gateway disconnected');
    if (!this.closed && !this.broker.gateways.has(this.gatewayId)) this.broker.startGrace(this.gatewayId);
  }
}
