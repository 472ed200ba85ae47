// The CoAP binding: RIOT nodes POST /alive beacons and /server values to the gateway; it discovers each node's
// resources (discovery.ts), observes or polls them (observe.ts) and writes with PUT. Wire-compatible with
// pyaiot's RIOT firmware (pyaiot-protocol §4); see docs/gateways/coap.md. The node table, liveness and the
// broker are the core's: this file turns CoAP requests into core events and core writes into CoAP requests.
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, OutgoingMessage } from 'coap';
import { KeyedRateLimiter } from '../../services/common/limits.ts';
import type { Logger } from '../../services/common/log.ts';
import type { Json } from '../../services/protocol/messages.ts';
import type { ForgetReason, ProtocolAdapter, TransportHealth, WriteOutcome } from '../common/adapter.ts';
import type { GatewayCore } from '../common/gateway-core.ts';
import { decodeUtf8, displayAddress, parseBeacon, parseValuePost, surplus } from './codec.ts';
import { type CoapContext, type CoapCounters, coapCounters } from './context.ts';
import { Discovery } from './discovery.ts';
import { type CoapNode, type CoapState, EndpointIndex } from './endpoint-index.ts';
import { Observations } from './observe.ts';
import type { CoapGatewayConfig } from './options.ts';
import { CoapTransport, type Target } from './transport.ts';

export const PROTOCOL = 'CoAP';
/** Credit an unverified node may bank: a few probes' worth, so old traffic cannot fund a later burst. */
const MAX_CREDIT_BYTES = 256;

/** Why a beacon was refused, and the code it is answered with. */
interface BeaconRefusal {
  code: string;
  reason: string;
  /** RFC 8516 §4: with 4.29, seconds after which the client may try again. */
  maxAge?: number;
}

export class CoapAdapter implements ProtocolAdapter<CoapState> {
  readonly protocol = PROTOCOL;
  readonly counters: CoapCounters;
  readonly transport: CoapTransport;
  readonly endpoints = new EndpointIndex();
  readonly observations: Observations;
  readonly discovery: Discovery;
  private readonly ctx: CoapContext;
  private readonly newNodeLimiter: KeyedRateLimiter;
  /** Refusal reasons already logged at warn: each is logged once, then only counted. */
  private readonly loggedOnce = new Set<string>();
  private running = false;

  constructor(
    private readonly config: CoapGatewayConfig,
    private readonly core: GatewayCore<CoapState>,
    private readonly log: Logger,
  ) {
    this.counters = coapCounters(core.metrics);
    this.transport = new CoapTransport({
      host: config.coapHost,
      port: config.coapPort,
      dedupCacheBytes: config.dedupCacheBytes,
      requestTimeoutMs: config.requestTimeoutMs,
      log,
    });
    this.ctx = {
      config,
      log,
      core,
      transport: this.transport,
      counters: this.counters,
      alive: (node, generation) => this.running && node.state.generation === generation && core.node(node.uid) === node,
      target: (node) => this.target(node),
      warnOnce: (reason, fields, msg) => this.warnOnce(reason, fields, msg),
    };
    this.observations = new Observations(this.ctx);
    this.discovery = new Discovery(this.ctx, this.observations, 2);
    this.newNodeLimiter = new KeyedRateLimiter({
      perSecond: config.newNodesPerMinute / 60,
      burst: config.newNodesPerMinute,
    });
  }

  async start(): Promise<void> {
    this.running = true;
    this.discovery.start();
    await this.transport.start({
      onRequest: (req, res) => this.onRequest(req, res),
      onRefused: (kind, rsinfo, reason) => this.onRefused(kind, rsinfo, reason),
    });
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.observations.clear();
    this.discovery.stop();
    this.endpoints.clear();
    await this.transport.stop();
  }

  health(): TransportHealth {
    return this.transport.bound ? { up: true } : { up: false, detail: 'CoAP UDP socket not bound' };
  }

  tick(now: number): void {
    this.observations.tick(now);
  }

  /** The bound UDP socket, `udp://host:port` (IPv6 in brackets, RFC 3986 §3.2.2). */
  listen(): string[] {
    const port = this.transport.port;
    if (port === undefined) return [];
    const host = this.config.coapHost;
    return [`udp://${host.includes(':') ? `[${host}]` : host}:${port}`];
  }

  discover(node: CoapNode): void {
    node.state.wantDiscovery = true;
    this.discovery.enqueue(node);
  }

  /** The core dropped the node (silent, or refused by the broker): its endpoint, observations and work go. */
  forget(node: CoapNode, why: ForgetReason): void {
    this.endpoints.remove(node);
    node.state.generation++;
    this.observations.drop(node);
    if (why.reason === 'refused') {
      this.log.warn({ uid: node.uid, code: why.code }, 'broker refused the node; dropped (its next beacon asks again)');
    }
  }

  /** Where requests to a node go. */
  target(node: CoapNode): Target {
    return { address: node.state.address, port: this.targetPort(node) };
  }

  // ------------------------------------------------------------------------------------------------
  // Inbound: what nodes POST to the gateway

  private onRequest(req: IncomingMessage, res: OutgoingMessage): void {
    this.core.noteIn();
    try {
      const path = req.url.split('?')[0];
      if (path !== '/alive' && path !== '/server') return this.refuse(res, '4.04', 'unknown-path');
      // RFC 7252 §5.8.2: POST; anything else on these paths is 4.05.
      if (req.method !== 'POST') return this.refuse(res, '4.05', 'method');
      const payload = req.payload;
      if (payload.length > this.config.maxPayloadBytes) {
        // RFC 7252 §5.9.2.9: 4.13 with Size1 saying what would have been accepted.
        res.setOption('Size1', this.config.maxPayloadBytes);
        return this.refuse(res, '4.13', 'too-large');
      }
      const text = decodeUtf8(payload);
      if (text === undefined) return this.refuse(res, '4.00', 'bad-utf8');
      const { address, port } = req.rsinfo;
      if (path === '/alive') {
        const beacon = parseBeacon(text);
        if (!beacon.ok) return this.refuse(res, beacon.code, beacon.kind);
        const refusal = this.onBeacon(beacon.uid, beacon.reset, address, port, surplus(req));
        if (refusal !== undefined) {
          if (refusal.maxAge !== undefined) res.setOption('Max-Age', refusal.maxAge);
          return this.refuse(res, refusal.code, refusal.reason);
        }
      } else {
        const node = this.endpoints.findBySource(address, port);
        if (node === undefined) {
          this.counters.unknownSender.inc();
          this.core.noteError('unknown-sender');
          this.log.debug({ address, port }, 'value post from an unknown node');
          return this.reply(res, '4.04');
        }
        const post = parseValuePost(text);
        if (!post.ok) return this.refuse(res, post.code, post.kind);
        node.lastSeen = Date.now();
        node.state.credit = Math.min(node.state.credit + surplus(req), MAX_CREDIT_BYTES);
        this.counters.values.inc();
        // Refused by the core (a cap): counted there in node_refusals_total.
        if (this.core.update(node.uid, post.resource, post.value) !== undefined) return this.reply(res, '4.00');
      }
      // pyaiot answered "Received '<payload>'"; RIOT never reads it. No payload: an answer never outweighs its
      // request, so a spoofed source cannot use the gateway as an amplifier (issue 10 finding 6).
      this.reply(res, '2.04');
    } catch (err) {
      this.log.error({ err }, 'CoAP request handler failed');
      this.reply(res, '5.00');
    }
  }

  /** Answers carry no diagnostic payload (RFC 7252 §5.5.2 allows one): see Amplification in the docs. */
  private reply(res: OutgoingMessage, code: string): void {
    res.code = code;
    res.end();
  }

  private refuse(res: OutgoingMessage, code: string, reason: string): void {
    this.counters.bad(reason).inc();
    this.core.noteError(reason);
    this.reply(res, code);
  }

  private onRefused(kind: 'malformed' | 'refused-by-library', rsinfo: AddressInfo, reason: string): void {
    this.core.noteError(kind);
    if (kind === 'malformed') {
      this.counters.malformed.inc();
      this.log.debug({ address: rsinfo.address, port: rsinfo.port, reason }, 'malformed CoAP datagram dropped');
    } else {
      this.counters.bad('refused-by-library').inc();
      this.log.debug({ address: rsinfo.address, reason }, 'CoAP request refused');
    }
  }

  /** A warning the first time a refusal reason happens, then only the counter (a flood must not flood the log). */
  private warnOnce(reason: string, fields: Record<string, unknown>, msg: string): void {
    if (this.loggedOnce.has(reason)) {
      this.log.debug({ reason, ...fields }, msg);
      return;
    }
    this.loggedOnce.add(reason);
    this.log.warn({ reason, ...fields }, `${msg} (logged once per reason, then counted)`);
  }

  /**
   * A valid beacon. Returns why it is refused, or undefined when accepted (answered 2.04).
   * A uid is bound to the address of its first beacon while the gateway knows the node (trust on first use);
   * the port may change (NAT, clients that beacon from a fresh socket). See docs/gateways/coap.md, Identity.
   */
  private onBeacon(
    uid: string,
    reset: boolean,
    address: string,
    port: number,
    credit: number,
  ): BeaconRefusal | undefined {
    const core = this.core;
    const now = Date.now();
    const node = core.node(uid);
    if (node === undefined) return this.onNewNode(uid, reset, address, port, credit);
    const s = node.state;
    const addressChanged = s.address !== address;
    if (addressChanged && !this.config.allowRebinding) {
      // Not refreshed either: a beacon from elsewhere must not keep a silent node alive.
      this.warnOnce('uid-bound-elsewhere', { uid, address, boundTo: s.address }, 'beacon for a uid bound elsewhere');
      return { code: '4.03', reason: 'uid-bound-elsewhere' };
    }
    this.counters.beacons.inc();
    node.lastSeen = now;
    s.credit = Math.min(s.credit + credit, MAX_CREDIT_BYTES);
    s.probeReady = true;
    const moved = addressChanged || s.port !== port;
    if (moved) {
      const before = this.targetPort(node);
      this.endpoints.move(node, address, port);
      this.counters.rebinds.inc();
      if (addressChanged) core.update(uid, 'ip', displayAddress(address));
      // Requests now go to an endpoint that never answered us: verify it again before anything but a probe,
      // and drop observations registered at the old one. A node served at the fallback or --node-port keeps it
      // (coap-client beacons from a fresh port every time: that is logged at debug only).
      if (addressChanged || (s.serve !== undefined && this.targetPort(node) !== before)) {
        this.unverify(node);
        this.log.info({ uid, address, port }, 'node heard from a new endpoint; verifying it there');
      } else this.log.debug({ uid, address, port }, 'node beaconed from another port');
    }
    if (reset) {
      // The node rebooted: its values and any observations are void. One `reset` to clients, no `out`.
      this.counters.resets.inc();
      s.generation++;
      this.observations.drop(node);
      core.nodeReset(uid);
      for (const [k, v] of Object.entries(this.ownResources(address))) core.update(uid, k, v);
      s.wantDiscovery = true;
    } else if (s.discoveryFailedAt > 0 && (moved || now - s.discoveryFailedAt >= this.config.discoveryRetryMs)) {
      // The node beacons but did not answer discovery: maybe it was busy, maybe it moved. Try again.
      s.wantDiscovery = true;
    }
    if (s.wantDiscovery) this.discovery.enqueue(node);
    return undefined;
  }

  private onNewNode(
    uid: string,
    reset: boolean,
    address: string,
    port: number,
    credit: number,
  ): BeaconRefusal | undefined {
    // Spoofed beacons with fresh uids would fill the broker: a bucket of new uids per source address.
    if (!this.newNodeLimiter.take(address)) {
      this.warnOnce('new-node-rate', { uid, address }, 'new node refused: too many new uids from this address');
      return {
        code: '4.29',
        reason: 'new-node-rate',
        maxAge: Math.max(1, Math.ceil(60 / this.config.newNodesPerMinute)),
      };
    }
    const state: CoapState = {
      address,
      port,
      generation: 0,
      discovering: false,
      discoveryFailedAt: 0,
      wantDiscovery: true,
      credit: Math.min(credit, MAX_CREDIT_BYTES),
      probeReady: true,
      probeStep: 0,
    };
    const added = this.core.add(uid, state, { resources: this.ownResources(address), status: 'unverified' });
    if (typeof added === 'string') {
      // Counted in node_refusals_total by the core; RFC 7252 §5.9.3.4: 5.03 for a full table (retry later).
      return added === 'max-nodes'
        ? { code: '5.03', reason: 'max-nodes', maxAge: 60 }
        : { code: '4.00', reason: `refused-${added}` };
    }
    this.counters.beacons.inc();
    this.endpoints.add(added);
    this.counters.nodesNew.inc();
    this.log.debug({ uid, address, port, reset }, 'node appeared');
    this.discovery.enqueue(added);
    return undefined;
  }

  private ownResources(address: string): Record<string, Json> {
    return { protocol: PROTOCOL, ip: displayAddress(address) };
  }

  /** The node's endpoint changed: nothing but probes until it answers one there. */
  private unverify(node: CoapNode): void {
    node.state.serve = undefined;
    node.state.probeStep = 0;
    node.state.generation++;
    node.status = 'unverified';
    this.observations.drop(node);
    node.state.wantDiscovery = true;
  }

  // ------------------------------------------------------------------------------------------------
  // Writes (pyaiot-protocol §4.4, with results)

  async write(node: CoapNode, endpoint: string, payload: Json): Promise<WriteOutcome> {
    // UTF-8, not pyaiot's ASCII; JSON values that are not strings travel as their JSON text.
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    const answer = await this.transport.request(this.target(node), 'PUT', `/${endpoint}`, Buffer.from(text, 'utf8'));
    if (answer.kind === 'timeout') return { result: 'timeout' };
    if (answer.kind === 'error') return { result: 'error', reason: answer.err.message };
    // RFC 7252 §5.8.3: PUT succeeds with 2.04 Changed or 2.01 Created; pyaiot's test node answers 2.05.
    if (answer.code === '2.04' || answer.code === '2.05' || answer.code === '2.01') {
      this.core.update(node.uid, endpoint, text);
      return { result: 'ok' };
    }
    return { result: 'error', reason: answer.code };
  }

  private targetPort(node: CoapNode): number {
    if (this.config.nodePort > 0) return this.config.nodePort;
    return node.state.serve === 'fallback' ? this.config.fallbackNodePort : node.state.port;
  }
}
