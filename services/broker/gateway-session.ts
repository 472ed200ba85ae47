// One gateway connection on /gw: validates each frame, enforces node ownership, turns gateway frames into
// node events on the bus, and carries writes to the gateway and their results back.
import type { RawData, WebSocket } from 'ws';
import type { Logger } from '../common/log.ts';
import { CloseCode, ErrorCode } from '../protocol/errors.ts';
import { encode, parseGatewayFrame } from '../protocol/frames.ts';
import type { BrokerToGatewayMessage, GatewayMessage, GatewayRecord, GwNew, GwResult } from '../protocol/messages.ts';
import { isIdentifier } from '../protocol/schema.ts';
import { refusedFrameUid } from './frame-uid.ts';
import type { NodeEvent, OwnerLost } from './node-table.ts';
import type { ClaimResult, OwnershipRegistry } from './ownership.ts';
import type { BrokerCounters, EventPublisher, GracePeriods, NodeAdmission, NodeReader, NodeRefusal } from './ports.ts';
import type { WriteRouter } from './writes.ts';
// [gw-reports] inventory, status and action results (issue 11, item 7)
import { MAX_REPORT_BYTES } from '../protocol/gateway-reports.ts';
import type { ActionRouter } from './gateway-actions.ts';
import type { ExecRouter } from './exec-router.ts'; // [console]
import type { GatewayReports } from './gateway-reports.ts';
import { refusedReportType } from './report-frames.ts';
// [accounts] device keys presented at the gateway, verified here for it (issue 15)
import type { ApiKeyVerifier } from '../accounts/verifier.ts';
import type { GwVerifyKey, KeyRefusal } from '../protocol/key-frames.ts';

/** [accounts] Key checks one gateway link may have in flight; more are answered `busy` (a flood stays bounded). */
export const MAX_KEY_CHECKS_PER_GATEWAY = 64;
const NODE_KEY_ROLES = ['node'] as const;
const NO_REVOKED_KEYS: ReadonlySet<string> = new Set();

/** What a gateway session is given: made once by the broker and shared by every gateway session. */
export interface GatewaySessionDeps {
  brokerId: string;
  /** The broker's logger; each session takes a child of it. */
  log: Logger;
  counters: Pick<BrokerCounters, 'gatewayFramesIn' | 'toGateways' | 'rejected'>;
  /** Read only: the session compares a re-announced node with what the table holds. */
  table: Pick<NodeReader, 'get'>;
  /** Where accepted frames go as node events (the hot path). */
  events: EventPublisher;
  admission: NodeAdmission;
  ownership: Pick<OwnershipRegistry, 'claim'>;
  writes: Pick<WriteRouter, 'serveGateway' | 'unserveGateway' | 'complete'>;
  /** The broker's map of connected gateways: told when this session's socket is gone. */
  connected: GatewayDirectory;
  grace: GracePeriods;
  /** --max-claim-queue */
  maxClaimQueue: number;
  /** [gw-reports] Where inventory and status reports go. */
  reports: Pick<GatewayReports, 'inventory' | 'status' | 'gone'>;
  /** [gw-reports] Actions to this gateway, and their results. */
  actions: Pick<ActionRouter, 'serveGateway' | 'unserveGateway' | 'complete'>;
  /** [console] Console requests to this gateway's nodes, and their output (absent: the gateway gets none). */
  exec?: Pick<ExecRouter, 'serveGateway' | 'unserveGateway' | 'complete'>;
  /** [accounts] Verifies device keys for the gateway (absent: every `verify-key` is answered `unavailable`). */
  apiKeys?: Pick<ApiKeyVerifier, 'verify' | 'revokedKeyIds'>;
  /**
   * [accounts] Told when a gateway without an organisation (the operator's) admits a device by its key: the node
   * then belongs to the key's organisation (the broker's OrgDirectory).
   */
  deviceOrg?: (gatewayId: string, uid: string, org: string) => void;
}

/** The broker's gateways by id, as a session sees it. */
export interface GatewayDirectory {
  has(gatewayId: string): boolean;
  /** Called when `session`'s socket is gone (the map keeps a newer session of the same gateway). */
  gatewayGone(session: GatewaySession): void;
}

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
  /** Uids whose `new` awaits the ownership registry, with the frames that arrived for them meanwhile. */
  private claiming?: Map<string, { msg: GatewayMessage; text: string; receivedAt: number }[]>;
  /** Frames waiting in `claiming`, all uids together (bounded by --max-claim-queue). */
  private queued = 0;
  /** [accounts] `verify-key` requests of this link being answered. */
  private keyChecks = 0;
  /** [accounts] The revoked key list last sent to the gateway (the verifier replaces its set on every change). */
  private sentRevoked: ReadonlySet<string> = NO_REVOKED_KEYS;

  constructor(
    private readonly deps: GatewaySessionDeps,
    readonly ws: WebSocket,
    readonly gatewayId: string,
    /** [accounts] The organisation of the gateway's token; a device key of another one is refused. */
    readonly org?: string,
  ) {
    this.log = deps.log.child({ gateway: gatewayId });
  }

  start(): void {
    this.log.info('gateway connected');
    this.deps.writes.serveGateway(this);
    this.deps.actions.serveGateway(this); // [gw-reports]
    this.deps.exec?.serveGateway(this); // [console]
    this.ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    this.ws.on('pong', () => {
      this.alive = true;
    });
    this.ws.on('error', (err) => this.onSocketError(err));
    this.ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
  }

  record(): GatewayRecord {
    return { id: this.gatewayId, broker: this.deps.brokerId, connectedAt: this.connectedAt, nodes: this.nodes.size };
  }

  /** Called every ping interval: a gateway that did not answer the previous ping is dropped (half-open link). */
  heartbeat(): void {
    if (!this.alive) {
      this.log.warn('gateway stopped answering pings');
      this.deps.counters.rejected('gateway-ping-timeout').inc();
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  send(msg: BrokerToGatewayMessage): void {
    if (this.ws.readyState !== 1) return;
    const frame = encode(msg);
    if (frame === undefined) return this.log.warn({ type: msg.type }, 'frame cannot be serialized; dropped');
    this.ws.send(frame);
    this.deps.counters.toGateways.inc();
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
    const receivedAt = performance.now();
    this.deps.counters.gatewayFramesIn.inc();
    if (isBinary) return this.reject(CloseCode.UnsupportedData, 'binary-frame', 'only text frames are accepted');
    const text = data.toString();
    const parsed = parseGatewayFrame(text);
    if (!parsed.ok) {
      // [gw-reports] A bad report is refused alone: node traffic on the link goes on.
      const report = refusedReportType(text);
      if (report !== undefined) return this.refuseReport(report, parsed.code, parsed.reason);
      // A bad frame about one node is refused for that node only; the link stays (finding 3 of issue 10).
      const uid = refusedFrameUid(text);
      if (uid !== undefined)
        return this.refuseNode(uid, { code: parsed.code, counter: parsed.code, reason: parsed.reason });
      return this.reject(parsed.close, parsed.code, parsed.reason);
    }
    this.dispatch(parsed.value, text, receivedAt);
  }

  private dispatch(msg: GatewayMessage, text: string, receivedAt: number): void {
    // Frames about a node whose ownership is still being decided wait behind its `new`, in order (see onNew).
    if (this.claiming !== undefined && 'uid' in msg && this.claiming.has(msg.uid)) {
      return this.defer(msg.uid, msg, text, receivedAt);
    }
    switch (msg.type) {
      case 'new': {
        const refusal = this.deps.admission.admitNode(
          msg.uid,
          msg.data === undefined ? 0 : Object.keys(msg.data).length,
        );
        if (refusal !== undefined) return this.refuseNode(msg.uid, refusal);
        return this.onNew(msg);
      }
      case 'update': {
        if (!this.owns(msg.uid)) return;
        const refusal = this.deps.admission.admitResource(msg.uid, msg.endpoint);
        if (refusal !== undefined) return this.refuseNode(msg.uid, refusal);
        const event: NodeEvent = { type: 'update', uid: msg.uid, endpoint: msg.endpoint, data: msg.data };
        // The hot path: a gateway update with no extra fields is already the client frame, so its text is
        // forwarded as it came (validated above) instead of being serialized again.
        this.deps.events.publishEvent(event, hasOnlyKeys(msg, 4) ? text : undefined, receivedAt, this.gatewayId);
        return;
      }
      case 'out': {
        if (!this.owns(msg.uid)) return;
        this.nodes.delete(msg.uid);
        const out: NodeEvent = { type: 'out', uid: msg.uid, reason: msg.reason, lastSeen: Date.now() };
        this.deps.events.publishEvent(out, undefined, receivedAt, this.gatewayId);
        return;
      }
      case 'reset': {
        if (!this.owns(msg.uid)) return;
        this.deps.events.publishEvent({ type: 'reset', uid: msg.uid }, undefined, receivedAt, this.gatewayId);
        return;
      }
      case 'result':
        return this.onResult(msg);
      // [gw-reports]
      case 'inventory':
      case 'status':
        if (text.length > MAX_REPORT_BYTES) {
          return this.refuseReport(msg.type, ErrorCode.TooBig, `${msg.type}: larger than ${MAX_REPORT_BYTES} bytes`);
        }
        if (msg.type === 'inventory') this.deps.reports.inventory(this, msg);
        else this.deps.reports.status(this, msg);
        return;
      case 'action-result':
        if (!this.deps.actions.complete(this, msg)) this.deps.counters.rejected('unknown-action-id').inc();
        return;
      case 'verify-key': // [accounts]
        return this.onVerifyKey(msg);
      // [console] output of a console request: only to the requester that sent it through this gateway
      case 'exec-output':
      case 'exec-exit':
        if (this.deps.exec?.complete(this, msg) !== true) this.deps.counters.rejected('unknown-exec-id').inc();
        return;
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  /**
   * Node ownership (docs/architecture.md, "Node ownership"): the broker's ownership registry decides whether this
   * gateway may hold the uid (first announcer keeps it; a token-proven uid may follow its node to another gateway
   * while offline; an operator's DELETE releases it). On NATS the decision is made once for the cluster and takes
   * a round trip: until it is known, later frames for the uid wait in `claiming`, in order, so an update sent
   * right after `new` is neither refused nor lost.
   */
  private onNew(msg: GwNew): void {
    const decided = this.deps.ownership.claim(msg.uid, this.gatewayId, msg.proof);
    if (!(decided instanceof Promise)) return this.onClaim(msg, decided);
    this.claiming ??= new Map();
    this.claiming.set(msg.uid, []);
    decided.then(
      (result) => {
        this.onClaim(msg, result);
        this.settleClaim(msg.uid);
      },
      (err: unknown) => this.onClaimFailed(msg.uid, err),
    );
  }

  private onClaim(msg: GwNew, result: ClaimResult): void {
    // A gateway gone while the cluster decided: its nodes are re-announced by its next connection.
    if (this.ws.readyState !== 1) return;
    if (!result.ok) {
      // It may have held the uid until a moment ago (moved or removed, the event not applied here yet).
      this.nodes.delete(msg.uid);
      const refused = this.deps.counters.rejected('duplicate-uid');
      refused.inc();
      // A device beaconing a taken uid is refused at every beacon: logged at the first and every 1000th.
      if (refused.value % 1000 === 1) {
        this.log.warn(
          { uid: msg.uid, owner: result.owner, why: result.why, count: refused.value },
          'refused a node uid owned by another gateway',
        );
      }
      this.send({
        type: 'error',
        code: ErrorCode.DuplicateUid,
        reason: `node ${msg.uid} is owned by gateway ${result.owner || 'unknown'} (${result.why})`,
        uid: msg.uid,
      });
      return;
    }
    if (result.moved !== undefined) {
      this.log.info({ uid: msg.uid, from: result.moved.from }, 'token-proven node moved to this gateway');
    }
    const existing = this.deps.table.get(msg.uid);
    const proof = result.claim.proof;
    // A gateway re-announcing its own online node (after a reconnect) is not news for clients.
    const readopt =
      existing !== undefined &&
      existing.status === 'online' &&
      existing.gateway === this.gatewayId &&
      existing.proof === proof;
    this.nodes.add(msg.uid);
    if (!readopt) {
      const event: NodeEvent = {
        type: 'new',
        uid: msg.uid,
        gateway: this.gatewayId,
        protocol: msg.protocol,
        status: 'online',
        lastSeen: Date.now(),
      };
      if (proof !== undefined) event.proof = proof;
      this.deps.events.publishEvent(event, undefined, undefined, this.gatewayId);
    }
    if (msg.data) {
      const known = readopt ? existing.resources : undefined;
      for (const endpoint in msg.data) {
        const data = msg.data[endpoint];
        if (known !== undefined && JSON.stringify(known[endpoint]) === JSON.stringify(data)) continue;
        this.deps.events.publishEvent(
          { type: 'update', uid: msg.uid, endpoint, data },
          undefined,
          undefined,
          this.gatewayId,
        );
      }
    }
  }

  /** The store could not decide (JetStream down or slow): the gateway retries by reconnecting and replaying. */
  private onClaimFailed(uid: string, err: unknown): void {
    this.claiming?.delete(uid);
    this.deps.counters.rejected('ownership-unavailable').inc();
    this.log.error({ err, uid }, 'node ownership could not be decided; closing the gateway link so it retries');
    this.close(CloseCode.TryAgainLater, 'node ownership store unavailable, retry later');
  }

  /** Frames that arrived for `uid` while its claim was in flight, replayed in order now that it is decided. */
  private settleClaim(uid: string): void {
    const queue = this.claiming?.get(uid);
    if (queue === undefined) return;
    this.claiming?.delete(uid);
    this.queued -= queue.length;
    for (let i = 0; i < queue.length; i++) {
      this.dispatch(queue[i].msg, queue[i].text, queue[i].receivedAt);
      // A later `new` for the uid started a claim of its own: what follows it waits for that one.
      const next = this.claiming?.get(uid);
      if (next !== undefined) {
        for (let j = i + 1; j < queue.length; j++) next.push(queue[j]);
        this.queued += queue.length - i - 1;
        return;
      }
    }
  }

  private defer(uid: string, msg: GatewayMessage, text: string, receivedAt: number): void {
    if (this.queued >= this.deps.maxClaimQueue) {
      this.deps.counters.rejected('claim-queue-full').inc();
      this.log.warn({ uid, queued: this.queued }, 'too many frames wait for ownership decisions; closing the link');
      // State, not backlog: the gateway reconnects and replays each node's current state.
      this.close(CloseCode.TryAgainLater, 'too many frames while node ownership is decided');
      return;
    }
    this.claiming?.get(uid)?.push({ msg, text, receivedAt });
    this.queued++;
  }

  /**
   * True when this connection holds `uid` or has announced it and awaits the ownership decision: a large replay
   * on JetStream takes seconds, and the grace period must not put out nodes whose claim is merely in flight.
   */
  announced(uid: string): boolean {
    return this.nodes.has(uid) || this.claiming?.has(uid) === true;
  }

  /** The node left this gateway (another gateway took it, or an operator removed it): frames for it are refused. */
  ownershipLost(uid: string, why: OwnerLost): void {
    if (!this.nodes.delete(uid) || why === 'evicted') return;
    this.log.info({ uid, why }, 'node no longer owned by this gateway');
    this.send(
      why === 'removed'
        ? { type: 'error', code: ErrorCode.NodeRemoved, reason: `node ${uid} was removed by an operator`, uid }
        : { type: 'error', code: ErrorCode.DuplicateUid, reason: `node ${uid} moved to another gateway`, uid },
    );
  }

  private owns(uid: string): boolean {
    if (this.nodes.has(uid)) return true;
    this.deps.counters.rejected('not-owner').inc();
    this.log.warn({ uid }, 'gateway sent a frame for a node it does not own');
    this.send({
      type: 'error',
      code: ErrorCode.NotOwner,
      reason: `node ${uid} was not announced by this gateway`,
      uid,
    });
    return false;
  }

  /** Refuses one frame about one node: counted, logged (first and every 1000th), answered with an error frame. */
  private refuseNode(uid: string, refusal: NodeRefusal): void {
    const counter = this.deps.counters.rejected(refusal.counter);
    counter.inc();
    if (counter.value % 1000 === 1) {
      this.log.warn({ uid, code: refusal.code, reason: refusal.reason, count: counter.value }, 'node frame refused');
    }
    this.send({ type: 'error', code: refusal.code, reason: refusal.reason.slice(0, 200), uid });
  }

  /**
   * [accounts] A device key presented to the gateway: verified with the broker's ApiKeyVerifier (cached, and the
   * revocation broadcast checked on every use), bound to a node, of the gateway's organisation. The answer never
   * carries the key. Bounded per link: a flood of keys is answered `busy` without asking the accounts service.
   */
  private onVerifyKey(msg: GwVerifyKey): void {
    const answer = (fields: { ok: true; node: string; org?: string; exp?: number; jti?: string } | KeyRefusal) => {
      if (typeof fields === 'string') {
        this.deps.counters.rejected(`gateway-key-${fields}`).inc();
        return this.send({ type: 'key-verified', id: msg.id, ok: false, reason: fields });
      }
      this.send({ type: 'key-verified', id: msg.id, role: 'node', ...fields });
    };
    const verifier = this.deps.apiKeys;
    if (verifier === undefined) return answer('unavailable');
    if (this.keyChecks >= MAX_KEY_CHECKS_PER_GATEWAY) return answer('busy');
    this.keyChecks++;
    verifier
      .verify(msg.key, NODE_KEY_ROLES)
      .then((result) => {
        if (!result.ok) {
          // The verifier says `malformed` when the accounts service did not answer; `bad-signature`: no such key.
          const why: KeyRefusal =
            result.reason === 'malformed'
              ? 'unavailable'
              : result.reason === 'revoked' || result.reason === 'expired' || result.reason === 'wrong-role'
                ? result.reason
                : 'unknown';
          return answer(why);
        }
        const { sub, org, exp, jti } = result.claims;
        // A gateway of an organisation serves that organisation's devices only (a gateway without one, started
        // with a `mycelium token` token, is the operator's and serves any).
        if (this.org !== undefined && org !== this.org) return answer('wrong-org');
        if (isIdentifier(sub) !== undefined) return answer('unknown');
        if (this.org === undefined && org !== undefined) this.deps.deviceOrg?.(this.gatewayId, sub, org);
        answer({ ok: true, node: sub, org, exp, jti });
      })
      .catch((err: unknown) => {
        this.log.error({ err }, 'device key check failed');
        answer('unavailable');
      })
      .finally(() => {
        this.keyChecks--;
      });
  }

  /**
   * [accounts] Called by the broker's session sweep: when the revoked key list changed, the gateway gets it whole
   * and closes the node sessions opened with those keys. A gateway that never needs it (the list is empty) gets
   * nothing; a new link gets the current list at the first sweep.
   */
  sweepKeys(): void {
    const list = this.deps.apiKeys?.revokedKeyIds();
    if (list === undefined || list === this.sentRevoked) return;
    const changed = list.size > 0 || this.sentRevoked.size > 0;
    this.sentRevoked = list;
    if (changed) this.send({ type: 'keys-revoked', keys: [...list] });
  }

  private onResult(msg: GwResult): void {
    if (!this.deps.writes.complete(this, msg)) {
      this.deps.counters.rejected('unknown-write-id').inc();
      this.log.debug({ id: msg.id }, 'result for an unknown or expired write');
    }
  }

  /** [gw-reports] Refuses one report: counted, logged (first and every 1000th), answered, the link kept. */
  private refuseReport(type: string, code: string, reason: string): void {
    const counter = this.deps.counters.rejected('bad-gateway-report');
    counter.inc();
    if (counter.value % 1000 === 1)
      this.log.warn({ type, code, reason, count: counter.value }, 'gateway report refused');
    this.send({ type: 'error', code, reason: reason.slice(0, 200) });
  }

  private reject(close: number, code: string, reason: string): void {
    this.deps.counters.rejected(code).inc();
    this.log.warn({ code, reason }, 'bad frame from gateway; closing');
    this.close(close, reason.slice(0, 120));
  }

  private onSocketError(err: Error & { code?: string }): void {
    // ws reports an oversized frame as an error, then closes with 1009 itself.
    const reason = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? ErrorCode.TooBig : (err.code ?? 'socket-error');
    this.deps.counters.rejected(reason).inc();
    this.log.warn({ err: err.message, code: err.code }, 'gateway socket error');
  }

  private onClose(code: number, reason: string): void {
    this.deps.connected.gatewayGone(this);
    this.deps.writes.unserveGateway(this);
    this.deps.actions.unserveGateway(this); // [gw-reports]
    this.deps.exec?.unserveGateway(this); // [console]
    this.deps.reports.gone(this); // [gw-reports]
    this.log.info({ code, reason }, 'gateway disconnected');
    if (!this.closed && !this.deps.connected.has(this.gatewayId)) this.deps.grace.startGrace(this.gatewayId);
  }
}
