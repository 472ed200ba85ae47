// The CoAP gateway: RIOT nodes POST /alive beacons and /server values to it; it discovers each node's resources
// (GET /.well-known/core, then GET or Observe each one), writes with PUT, and sends `out` for silent nodes.
// Wire-compatible with pyaiot's RIOT firmware (pyaiot-protocol §4); see docs/gateways/coap.md.
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:dgram';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import {
  Agent,
  createServer,
  type IncomingMessage,
  type ObserveReadStream,
  type OutgoingMessage,
  type Server,
} from 'coap';
import { type Counter, Metrics } from '../../services/common/metrics.ts';
import { KeyedRateLimiter } from '../../services/common/limits.ts';
import type { Logger } from '../../services/common/log.ts';
import { ErrorCode } from '../../services/protocol/errors.ts';
import type { BrError, Json, OutReason } from '../../services/protocol/messages.ts';
import { isIdentifier } from '../../services/protocol/schema.ts';
import { GatewayCore, type Refusal, type WriteOutcome } from '../common/gateway-core.ts';
import { type ActionHandler, type ActionOutcome, setLoggerLevels, unknownNode } from '../common/actions.ts'; // [gw-reports]
import { gatewayTokenSource } from '../common/options.ts';
import { parseLinkFormat, resourceName } from './link-format.ts';
import { type CoapNode, NodeTable } from './node-table.ts';
import type { CoapGatewayConfig } from './options.ts';
import { decodeUtf8, parseBeacon, parseValuePost } from './payloads.ts';
import { bindUdp, closeUdp } from './udp.ts';

export const PROTOCOL = 'CoAP';
/** Asked of the kernel for the gateway's UDP socket; bursts of beacons must not overflow the default ~200 KiB. */
const RECV_BUFFER_BYTES = 4 * 1024 * 1024;
/** RFC 7252 §5.10.5: Max-Age defaults to 60 s when a notification carries none. */
const DEFAULT_MAX_AGE_S = 60;
/** Error texts node-coap passes to its error path for valid packets it refuses (not malformed ones). */
const LIB_REFUSALS = ['Observe can only be present', 'FETCH requests must contain'];
/**
 * The reachability probe: a NON GET with no options and a 4-byte random token (RFC 7252 §3: 4 + 4 bytes).
 * Any answer carrying the token proves the node receives at that address and port; until then the gateway sends
 * it nothing but answers to its own requests and at most one probe per beacon (docs/gateways/coap.md, Amplification).
 */
const PROBE_TOKEN_BYTES = 4;
export const PROBE_BYTES = 4 + PROBE_TOKEN_BYTES;
/** Credit an unverified node may bank: a few probes' worth, so old traffic cannot fund a later burst. */
const MAX_CREDIT_BYTES = 256;

export interface CoapGatewayDeps {
  log: Logger;
  /** Broker token source; default: `--token` or a token minted from `--key-file`. */
  tokenSource?: () => Promise<string>;
}

type Answer = { kind: 'response'; code: string; payload: Buffer } | { kind: 'timeout' } | { kind: 'error'; err: Error };

/** Why a beacon was refused, and the code it is answered with. */
interface BeaconRefusal {
  code: string;
  reason: string;
  /** RFC 8516 §4: with 4.29, seconds after which the client may try again. */
  maxAge?: number;
}

interface Observation {
  node: CoapNode;
  generation: number;
  name: string;
  /**
   * observe: an RFC 7641 registration. poll: the node refused or did not register the observation (node-coap
   * re-sends Observe with every Block2 follow-up, which libcoap answers 4.00), so a plain GET every poll interval.
   */
  mode: 'observe' | 'poll';
  /** The live registration; undefined while (re-)registering or after a failed attempt. */
  stream?: ObserveReadStream;
  /** A registration or poll is in flight. */
  registering: boolean;
  /** Last notification, or last registration attempt or poll: the sweep renews/polls after `refreshMs` of this. */
  lastNotify: number;
  /** Silence after which the registration is renewed, or the poll period. */
  refreshMs: number;
  /** Last polled value reported (polls report changes only). */
  last?: string;
}

interface GatewayCounters {
  beacons: Counter;
  values: Counter;
  nodesNew: Counter;
  resets: Counter;
  rebinds: Counter;
  malformed: Counter;
  unknownSender: Counter;
  discoveryOk: Counter;
  discoveryTimeout: Counter;
  discoveryError: Counter;
  discoveryRateLimited: Counter;
  linkFormatErrors: Counter;
  notifications: Counter;
  observeRegistrations: Counter;
  observeRenewals: Counter;
  polls: Counter;
  bad: (reason: string) => Counter;
  refused: (reason: string) => Counter;
  brokerRefused: (code: string) => Counter;
  probes: (result: string) => Counter;
  writes: (result: string) => Counter;
  outs: (reason: string) => Counter;
}

export class CoapGateway {
  readonly config: CoapGatewayConfig;
  readonly counters: GatewayCounters;
  private readonly log: Logger;
  private readonly tokenSource?: () => Promise<string>;
  private readonly registry = new Metrics('mycelium_coap_');
  private readonly table = new NodeTable();
  /** Observations and polls, each in one set; nodeObservations indexes both by node. */
  private readonly observations = new Set<Observation>();
  private readonly polls = new Set<Observation>();
  private readonly nodeObservations = new Map<CoapNode, Set<Observation>>();
  private core?: GatewayCore;
  private socket?: Socket;
  private clientSocket?: Socket;
  private server?: Server;
  private agent?: Agent;
  private http?: HttpServer;
  private sweepTimer?: NodeJS.Timeout;
  private discoveryQueue: CoapNode[] = [];
  private discoveryHead = 0;
  private discoveryActive = 0;
  private lastRaw?: Buffer;
  private readonly newNodeLimiter: KeyedRateLimiter;
  private readonly discoveryLimiter: KeyedRateLimiter;
  /** The reason of GatewayCore's last refusal (it reports synchronously through onRefused). */
  private lastRefusal?: Refusal;
  /** Refusal reasons already logged at warn: each is logged once, then only counted. */
  private readonly loggedOnce = new Set<string>();
  /** Event-loop stalls are when the kernel's UDP receive buffer can overflow; worth watching. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  private running = false;

  constructor(config: CoapGatewayConfig, deps: CoapGatewayDeps) {
    this.config = config;
    this.log = deps.log;
    this.tokenSource = deps.tokenSource;
    const perMinute = (n: number) => ({ perSecond: n / 60, burst: n });
    this.newNodeLimiter = new KeyedRateLimiter(perMinute(config.newNodesPerMinute));
    this.discoveryLimiter = new KeyedRateLimiter(perMinute(config.discoveriesPerMinute));
    const r = this.registry;
    this.counters = {
      beacons: r.counter('beacons_total', 'POST /alive beacons accepted'),
      values: r.counter('values_total', 'POST /server value posts accepted'),
      nodesNew: r.counter('nodes_new_total', 'nodes announced to the broker'),
      resets: r.counter('resets_total', 'reset: beacons from known nodes'),
      rebinds: r.counter('rebinds_total', 'known nodes heard from a new address or port'),
      malformed: r.counter('malformed_total', 'datagrams that are not CoAP messages (dropped, RST if CON)'),
      unknownSender: r.counter('unknown_sender_total', 'POST /server from no known node (4.04)'),
      discoveryOk: r.counter('discovery_total', 'discoveries', { result: 'ok' }),
      discoveryTimeout: r.counter('discovery_total', 'discoveries', { result: 'timeout' }),
      discoveryError: r.counter('discovery_total', 'discoveries', { result: 'error' }),
      discoveryRateLimited: r.counter('discovery_total', 'discoveries', { result: 'rate-limited' }),
      linkFormatErrors: r.counter('link_format_errors_total', 'discovery answers with unparsable links'),
      notifications: r.counter('notifications_total', 'RFC 7641 notifications received'),
      observeRegistrations: r.counter('observe_registrations_total', 'observations registered'),
      observeRenewals: r.counter('observe_renewals_total', 'observations renewed after silence'),
      polls: r.counter('polls_total', 'plain GETs of resources whose observation the node refused'),
      bad: r.counterFamily('bad_requests_total', 'requests refused with a 4.xx code', 'reason'),
      refused: r.counterFamily('refused_total', 'nodes and values refused by the gateway core (caps, names)', 'reason'),
      brokerRefused: r.counterFamily('broker_refused_total', 'nodes the broker refused (dropped here)', 'code'),
      probes: r.counterFamily('probes_total', 'reachability probes of unverified nodes by result', 'result'),
      writes: r.counterFamily('writes_total', 'writes to nodes by result', 'result'),
      outs: r.counterFamily('out_total', 'nodes gone out by reason', 'reason'),
    };
    r.gauge('nodes', 'nodes known to the gateway', () => this.table.size);
    r.gauge('observations', 'active observations', () => this.observations.size);
    r.gauge('polls', 'resources polled instead of observed', () => this.polls.size);
    r.gauge('discovery_queue', 'nodes waiting for discovery', () => this.queued());
    r.gauge('event_loop_delay_max_seconds', 'longest event-loop stall since the previous scrape', () => {
      const max = this.loopDelay.max / 1e9;
      this.loopDelay.reset();
      return Number.isFinite(max) ? max : 0;
    });
  }

  /** The UDP port nodes post to (the real one when configured with 0). */
  get coapPort(): number {
    return (this.socket?.address() as AddressInfo | undefined)?.port ?? this.config.coapPort;
  }

  /** The metrics HTTP port, or undefined when off. */
  get httpPort(): number | undefined {
    const a = this.http?.address();
    return a && typeof a === 'object' ? a.port : undefined;
  }

  get nodeCount(): number {
    return this.table.size;
  }

  /** Where a node is currently addressed (for tests and the REST view). */
  nodeEndpoint(uid: string): { address: string; port: number } | undefined {
    const n = this.table.get(uid);
    return n ? { address: n.address, port: this.targetPort(n) } : undefined;
  }

  /** Prometheus text exposition of the counters. */
  metrics(): string {
    return this.registry.render();
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const c = this.config;
    this.core = new GatewayCore({
      protocol: PROTOCOL,
      urls: c.brokerUrl,
      token: this.tokenSource ?? gatewayTokenSource(c, 'coap'),
      log: this.log,
      backoffInitialMs: c.backoffInitialMs,
      backoffMaxMs: c.backoffMaxMs,
      pingIntervalMs: c.brokerPingMs,
      maxNodes: c.maxNodes,
      maxResourcesPerNode: c.maxResourcesPerNode,
      onRefused: (reason) => {
        this.lastRefusal = reason;
        this.counters.refused(reason).inc();
      },
      onBrokerError: (msg) => this.onBrokerError(msg),
      // [gw-reports] status reports, inventory and actions
      statusIntervalMs: c.statusInterval * 1000,
      listen: () => (this.socket === undefined ? [] : [`udp://${hostPort(this.socket.address())}`]),
      nodeCounts: () => this.nodeCounts(),
    });
    this.core.onWrite((uid, endpoint, payload) => this.write(uid, endpoint, payload));
    this.core.onAction(this.actions()); // [gw-reports]

    this.socket = await bindUdp(c.coapHost, c.coapPort);
    try {
      this.socket.setRecvBufferSize(RECV_BUFFER_BYTES);
    } catch {
      // The kernel caps it at net.core.rmem_max; the default still works at lower rates.
    }
    // Remember the datagram being handled: node-coap reports a parse failure without the bytes.
    this.socket.on('message', (msg) => {
      this.lastRaw = msg;
    });
    this.server = createServer({
      type: this.socket.address().family === 'IPv6' ? 'udp6' : 'udp4',
      cacheSize: c.dedupCacheBytes,
    });
    this.server._sendError = (payload, rsinfo, packet) => this.onLibError(payload, rsinfo, packet !== undefined);
    this.server.on('request', (req: IncomingMessage, res: OutgoingMessage) => this.onRequest(req, res));
    this.server.on('error', (err: Error) => this.log.warn({ err }, 'CoAP server socket error'));
    await new Promise<void>((resolve) => this.server!.listen(this.socket!, () => resolve()));

    // Requests to nodes leave from their own socket, so responses never meet the server's request path.
    const family = this.socket.address().family === 'IPv6' ? 'IPv6' : 'IPv4';
    this.clientSocket = await bindUdp(family === 'IPv6' ? '::' : '0.0.0.0', 0);
    this.agent = new Agent({ socket: this.clientSocket });
    this.agent.on('error', (err: Error) => this.log.warn({ err }, 'CoAP client socket error'));

    this.loopDelay.enable();
    this.sweepTimer = setInterval(() => this.sweep(), c.checkIntervalMs);
    this.sweepTimer.unref();

    if (c.httpPort >= 0) {
      this.http = createHttpServer((req, res) => {
        if (req.method === 'GET' && req.url === '/metrics') {
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.metrics());
        } else res.writeHead(404).end();
      });
      await new Promise<void>((resolve, reject) => {
        this.http!.once('error', reject);
        this.http!.listen(c.httpPort, c.httpHost, () => resolve());
      });
    }
    await this.core.start();
    this.log.info({ port: this.coapPort, family, httpPort: this.httpPort }, 'CoAP gateway listening');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.sweepTimer);
    this.loopDelay.disable();
    for (const o of this.observations) o.stream?.close();
    this.observations.clear();
    this.polls.clear();
    this.nodeObservations.clear();
    this.discoveryQueue = [];
    this.discoveryHead = 0;
    this.server?.close();
    this.agent?.close();
    await Promise.all([closeUdp(this.socket), closeUdp(this.clientSocket)]);
    if (this.http) await new Promise<void>((resolve) => this.http!.close(() => resolve()));
    this.http = undefined;
    await this.core?.stop();
  }

  // ------------------------------------------------------------------------------------------------
  // Inbound: what nodes POST to the gateway

  private onRequest(req: IncomingMessage, res: OutgoingMessage): void {
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
          this.counters.bad(refusal.reason).inc();
          return this.reply(res, refusal.code);
        }
      } else {
        const node = this.table.findBySource(address, port);
        if (node === undefined) {
          this.counters.unknownSender.inc();
          this.log.debug({ address, port }, 'value post from an unknown node');
          return this.reply(res, '4.04');
        }
        const post = parseValuePost(text);
        if (!post.ok) return this.refuse(res, post.code, post.kind);
        node.lastSeen = Date.now();
        node.credit = Math.min(node.credit + surplus(req), MAX_CREDIT_BYTES);
        this.counters.values.inc();
        // Refused by the core (a cap): counted there in refused_total.
        if (!this.core!.nodeUpdate(node.uid, post.resource, post.value)) return this.reply(res, '4.00');
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
    this.core?.stats.error(reason); // [gw-reports]
    this.reply(res, code);
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
   * node-coap's error path: a datagram it could not parse (packet undefined), or a valid one it refuses.
   * The library would answer a parse failure with 5.00 to the sender's port on localhost; instead: count it,
   * and per RFC 7252 §4.2 reject a Confirmable message with a Reset (its header is readable) or drop it.
   */
  private onLibError(payload: Buffer, rsinfo: AddressInfo, parsed: boolean): void {
    const text = payload.toString();
    if (parsed || LIB_REFUSALS.some((p) => text.startsWith(p))) {
      this.counters.bad('refused-by-library').inc();
      this.log.debug({ address: rsinfo.address, reason: text }, 'CoAP request refused');
      return;
    }
    this.counters.malformed.inc();
    this.core?.stats.error('malformed'); // [gw-reports]
    this.log.debug({ address: rsinfo.address, port: rsinfo.port, reason: text }, 'malformed CoAP datagram dropped');
    const raw = this.lastRaw;
    // Version 1 and type CON (RFC 7252 §3): send RST with the same Message ID (4 bytes, never more than came in).
    if (raw !== undefined && raw.length >= 4 && raw[0] >> 6 === 1 && ((raw[0] >> 4) & 3) === 0) {
      const rst = Buffer.from([0x70, 0x00, raw[2], raw[3]]);
      this.socket?.send(rst, rsinfo.port, rsinfo.address);
    }
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
    const core = this.core!;
    const now = Date.now();
    const node = this.table.get(uid);
    if (node === undefined) return this.onNewNode(uid, reset, address, port, credit);
    const addressChanged = node.address !== address;
    if (addressChanged && !this.config.allowRebinding) {
      // Not refreshed either: a beacon from elsewhere must not keep a silent node alive.
      this.warnOnce('uid-bound-elsewhere', { uid, address, boundTo: node.address }, 'beacon for a uid bound elsewhere');
      return { code: '4.03', reason: 'uid-bound-elsewhere' };
    }
    this.counters.beacons.inc();
    node.lastSeen = now;
    node.credit = Math.min(node.credit + credit, MAX_CREDIT_BYTES);
    node.probeReady = true;
    const moved = addressChanged || node.port !== port;
    if (moved) {
      const before = this.targetPort(node);
      this.table.move(node, address, port);
      this.counters.rebinds.inc();
      if (addressChanged) core.nodeUpdate(uid, 'ip', displayAddress(address));
      // Requests now go to an endpoint that never answered us: verify it again before anything but a probe,
      // and drop observations registered at the old one. A node served at the fallback or --node-port keeps it
      // (coap-client beacons from a fresh port every time: that is logged at debug only).
      if (addressChanged || (node.serve !== undefined && this.targetPort(node) !== before)) {
        this.unverify(node);
        this.log.info({ uid, address, port }, 'node heard from a new endpoint; verifying it there');
      } else this.log.debug({ uid, address, port }, 'node beaconed from another port');
    }
    if (reset) {
      // The node rebooted: its values and any observations are void. One `reset` to clients, no `out`.
      this.counters.resets.inc();
      node.generation++;
      this.dropObservations(node);
      core.nodeReset(uid);
      for (const [k, v] of Object.entries(this.ownResources(node))) core.nodeUpdate(uid, k, v);
      node.wantDiscovery = true;
    } else if (node.discoveryFailedAt > 0 && (moved || now - node.discoveryFailedAt >= this.config.discoveryRetryMs)) {
      // The node beacons but did not answer discovery: maybe it was busy, maybe it moved. Try again.
      node.wantDiscovery = true;
    }
    if (node.wantDiscovery) this.enqueueDiscovery(node);
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
    const fresh: CoapNode = {
      uid,
      address,
      port,
      lastSeen: Date.now(),
      generation: 0,
      discovering: false,
      discoveryFailedAt: 0,
      wantDiscovery: true,
      credit: Math.min(credit, MAX_CREDIT_BYTES),
      probeReady: true,
      probeStep: 0,
    };
    this.lastRefusal = undefined;
    if (!this.core!.nodeNew(uid, this.ownResources(fresh))) {
      // Counted in refused_total by the core; RFC 7252 §5.9.3.4: 5.03 for a full table (retry later).
      return this.lastRefusal === 'max-nodes'
        ? { code: '5.03', reason: 'max-nodes', maxAge: 60 }
        : { code: '4.00', reason: `refused-${this.lastRefusal ?? 'unknown'}` };
    }
    this.counters.beacons.inc();
    this.table.add(fresh);
    this.counters.nodesNew.inc();
    this.log.debug({ uid, address, port, reset }, 'node appeared');
    this.enqueueDiscovery(fresh);
    return undefined;
  }

  /** The broker refused a node (a duplicate uid, a bad frame): the core forgot it; the gateway drops it too. */
  private onBrokerError(msg: BrError): void {
    if (msg.uid === undefined || msg.code === ErrorCode.NotOwner) return;
    const node = this.table.get(msg.uid);
    if (node === undefined) return;
    this.counters.brokerRefused(msg.code).inc();
    this.table.remove(node);
    node.generation++;
    this.dropObservations(node);
    this.log.warn({ uid: msg.uid, code: msg.code }, 'broker refused the node; dropped (its next beacon asks again)');
  }

  private ownResources(node: CoapNode): Record<string, Json> {
    return { protocol: PROTOCOL, ip: displayAddress(node.address) };
  }

  /** The node's endpoint changed: nothing but probes until it answers one there. */
  private unverify(node: CoapNode): void {
    node.serve = undefined;
    node.probeStep = 0;
    node.generation++;
    this.dropObservations(node);
    node.wantDiscovery = true;
  }

  // ------------------------------------------------------------------------------------------------
  // Liveness: one sweep over every node, so 20k nodes cost one timer, not 20k.

  private sweep(): void {
    const now = Date.now();
    const limit = this.config.maxTime * 1000;
    for (const node of this.table.values()) {
      if (now - node.lastSeen > limit) this.nodeOut(node, 'timeout');
    }
    for (const o of this.observations) {
      // A failed renewal stays in the set (stream undefined) and is tried again one period later.
      if (!o.registering && now - o.lastNotify > o.refreshMs) {
        this.counters.observeRenewals.inc();
        this.log.debug({ uid: o.node.uid, resource: o.name }, 'observation silent; registering again');
        this.register(o)
          // A node that now refuses the observation (rebooted with other firmware, say) is polled instead.
          .then((result) => (result === 'refused' ? this.poll(o) : undefined))
          .catch((err) => this.log.warn({ err, uid: o.node.uid }, 'observe renewal failed'));
      }
    }
    for (const o of this.polls) {
      if (!o.registering && now - o.lastNotify >= o.refreshMs) {
        this.poll(o).catch((err) => this.log.warn({ err, uid: o.node.uid }, 'poll failed'));
      }
    }
  }

  // ------------------------------------------------------------------------------------------------
  // [gw-reports] Actions from the broker and node counts for the status report

  /**
   * rediscover: the node's discovery runs again (GET /.well-known/core, then each resource), as after a reset
   * beacon but without telling clients its values are void; observations are registered afresh. An unverified
   * node is probed at its next beacon first. forget: the node goes out with reason `removed`; its next beacon
   * announces it again.
   */
  private actions(): ActionHandler {
    return {
      rediscover: (uid) => {
        const nodes = uid === undefined ? [...this.table.values()] : [this.table.get(uid)];
        if (nodes[0] === undefined && uid !== undefined) return unknownNode(uid);
        for (const node of nodes) if (node !== undefined) this.rediscover(node);
        return { result: 'ok', detail: { nodes: nodes.length } } satisfies ActionOutcome;
      },
      forget: (uid) => {
        const node = this.table.get(uid);
        if (node === undefined) return unknownNode(uid);
        this.nodeOut(node, 'removed');
        return { result: 'ok' };
      },
      setLogLevel: (level) => setLoggerLevels(level, this.log),
    };
  }

  private rediscover(node: CoapNode): void {
    node.generation++;
    this.dropObservations(node);
    node.wantDiscovery = true;
    this.enqueueDiscovery(node);
  }

  private nodeCounts(): Record<string, number> {
    let discovering = 0;
    let unverified = 0;
    for (const node of this.table.values()) {
      if (node.discovering) discovering++;
      if (node.serve === undefined) unverified++;
    }
    return { online: this.table.size, discovering, unverified };
  }

  private nodeOut(node: CoapNode, reason: OutReason): void {
    this.table.remove(node);
    node.generation++;
    this.dropObservations(node);
    this.counters.outs(reason).inc();
    this.core!.nodeOut(node.uid, reason);
    this.log.debug({ uid: node.uid, reason }, 'node out');
  }

  // ------------------------------------------------------------------------------------------------
  // Discovery (pyaiot-protocol §4.3, with a real RFC 6690 parser and a bound on concurrent discoveries)

  private queued(): number {
    return this.discoveryQueue.length - this.discoveryHead;
  }

  private enqueueDiscovery(node: CoapNode): void {
    if (node.discovering) return;
    node.discoveryFailedAt = 0;
    node.discovering = true;
    this.discoveryQueue.push(node);
    this.pumpDiscovery();
  }

  private pumpDiscovery(): void {
    while (this.running && this.discoveryActive < this.config.discoveryConcurrency && this.queued() > 0) {
      const node = this.discoveryQueue[this.discoveryHead++];
      if (this.discoveryHead > 1024 && this.discoveryHead * 2 > this.discoveryQueue.length) {
        this.discoveryQueue = this.discoveryQueue.slice(this.discoveryHead);
        this.discoveryHead = 0;
      }
      this.discoveryActive++;
      const generation = node.generation;
      this.discover(node)
        .catch((err) => this.log.warn({ err, uid: node.uid }, 'discovery failed'))
        .finally(() => {
          node.discovering = false;
          this.discoveryActive--;
          // A reset while this discovery ran made its results void: discover the new generation.
          if (
            node.generation !== generation &&
            node.wantDiscovery &&
            this.running &&
            this.table.get(node.uid) === node
          ) {
            this.enqueueDiscovery(node);
          }
          this.pumpDiscovery();
        });
    }
  }

  private alive(node: CoapNode, generation: number): boolean {
    return this.running && node.generation === generation && this.table.get(node.uid) === node;
  }

  /** Requests are sent one after the other: RFC 7252 §4.7 NSTART = 1 outstanding interaction per node. */
  private async discover(node: CoapNode): Promise<void> {
    const gen = node.generation;
    if (!this.alive(node, gen)) return;
    if (node.serve === undefined && !(await this.verify(node, gen))) return;
    if (!this.alive(node, gen)) return;
    // Discovery costs the node (and the network) 1 + N requests: a bucket per source address. A refused one
    // stays due and is tried again at the node's next beacon.
    if (!this.discoveryLimiter.take(node.address)) {
      this.counters.discoveryRateLimited.inc();
      this.warnOnce('discovery-rate', { uid: node.uid, address: node.address }, 'discovery deferred: rate limit');
      return;
    }
    node.wantDiscovery = false;
    const answer = await this.request(node, 'GET', '/.well-known/core');
    if (!this.alive(node, gen)) return;
    if (answer.kind !== 'response') return this.discoveryFailed(node, answer, '/.well-known/core');
    if (answer.code !== '2.05') {
      this.counters.discoveryError.inc();
      this.log.warn({ uid: node.uid, code: answer.code }, 'discovery refused; node kept with what it has');
      return;
    }
    const text = decodeUtf8(answer.payload);
    const { links, errors } = parseLinkFormat(text ?? '');
    if (text === undefined || errors.length > 0) {
      this.counters.linkFormatErrors.inc();
      this.log.warn({ uid: node.uid, errors: text === undefined ? ['not UTF-8'] : errors }, 'bad link-format');
    }
    // protocol and ip are the gateway's own resources; the rest of the per-node cap is for the node's links.
    const room = this.config.maxResourcesPerNode - Object.keys(this.ownResources(node)).length;
    let taken = 0;
    for (const link of links) {
      const name = resourceName(link.target);
      if (name === undefined) continue;
      if (isIdentifier(name) !== undefined) {
        this.counters.bad('node-bad-resource').inc();
        this.warnOnce('node-bad-resource', { uid: node.uid, name: JSON.stringify(name.slice(0, 64)) }, 'bad link');
        continue;
      }
      if (++taken > room) {
        // No GET storm for a node that lists thousands of links: the core would refuse them anyway.
        this.counters.refused('max-resources').inc();
        this.warnOnce(
          'max-resources',
          { uid: node.uid, links: links.length },
          'node lists more resources than allowed',
        );
        break;
      }
      if (link.obs && !this.config.ignoreObs) {
        const o = this.observation(node, gen, name);
        const result = await this.register(o);
        if (!this.alive(node, gen)) return;
        if (result === 'no-answer') return this.discoveryFailed(node, { kind: 'timeout' }, name);
        if (result === 'refused') {
          // Not observable after all (or not the way node-coap asks): read it, and poll it if that works.
          const ok = await this.poll(o);
          if (!this.alive(node, gen)) return;
          if (ok === 'no-answer') return this.discoveryFailed(node, { kind: 'timeout' }, name);
        }
        continue;
      }
      const value = await this.request(node, 'GET', `/${name}`);
      if (!this.alive(node, gen)) return;
      if (value.kind !== 'response') return this.discoveryFailed(node, value, name);
      this.report(node, name, value.code, value.payload);
    }
    this.counters.discoveryOk.inc();
  }

  /**
   * Proves that the node receives at the address it beacons from before anything but answers is sent there:
   * one 8-byte NON probe per beacon, paid from the bytes the node sent (credit). The probe goes to the beacon's
   * source port, then (at the next beacon) to --fallback-node-port, for nodes that beacon from another socket
   * than they serve on (libcoap's coap-client, pyaiot's aiocoap test node). Node's UDP sockets do not report ICMP
   * port-unreachable on an unconnected socket, so "no answer within --request-timeout-ms" is the signal.
   * Returns true once verified.
   */
  private async verify(node: CoapNode, gen: number): Promise<boolean> {
    const ports = this.probePorts(node);
    if (node.probeStep >= ports.length) node.probeStep = 0;
    if (!node.probeReady || node.credit < PROBE_BYTES) {
      this.counters.probes('waiting').inc();
      return false; // stays due: the next beacon brings a probe and credit
    }
    node.probeReady = false;
    node.credit -= PROBE_BYTES;
    const step = node.probeStep;
    const port = ports[step];
    const answer = await this.request(node, 'GET', undefined, undefined, { port, probe: true });
    if (!this.alive(node, gen)) return false;
    // A RST (code 0.00) is matched by Message ID only, not by our token: it proves nothing.
    if (answer.kind === 'response' && answer.code !== '0.00') {
      this.counters.probes('ok').inc();
      node.serve = this.config.nodePort > 0 ? 'configured' : step === 0 ? 'beacon' : 'fallback';
      node.probeStep = 0;
      node.credit = 0;
      if (node.serve === 'fallback') this.log.info({ uid: node.uid, port }, 'node answers at the fallback port');
      return true;
    }
    this.counters.probes(answer.kind === 'response' ? 'reset' : answer.kind).inc();
    node.probeStep = step + 1;
    if (node.probeStep >= ports.length) {
      node.probeStep = 0;
      node.wantDiscovery = false;
      this.discoveryFailed(node, answer.kind === 'response' ? { kind: 'timeout' } : answer, 'probe');
    }
    return false;
  }

  private probePorts(node: CoapNode): number[] {
    const c = this.config;
    if (c.nodePort > 0) return [c.nodePort];
    return c.fallbackNodePort > 0 && c.fallbackNodePort !== node.port ? [node.port, c.fallbackNodePort] : [node.port];
  }

  private discoveryFailed(node: CoapNode, answer: Answer, what: string): void {
    node.discoveryFailedAt = Date.now();
    if (answer.kind === 'timeout') this.counters.discoveryTimeout.inc();
    else this.counters.discoveryError.inc();
    this.log.warn(
      { uid: node.uid, resource: what, err: answer.kind === 'error' ? answer.err : undefined },
      answer.kind === 'timeout' ? 'node did not answer discovery; kept with what it has' : 'discovery failed',
    );
  }

  /** Reports a value and returns it; undefined when it was not a readable 2.05 answer. */
  private report(node: CoapNode, name: string, code: string, payload: Buffer): string | undefined {
    if (code !== '2.05') {
      this.log.debug({ uid: node.uid, resource: name, code }, 'resource not readable');
      return undefined;
    }
    const value = decodeUtf8(payload);
    if (value === undefined) {
      this.counters.bad('node-bad-utf8').inc();
      this.log.warn({ uid: node.uid, resource: name }, 'resource value is not UTF-8; dropped');
      return undefined;
    }
    this.core!.nodeUpdate(node.uid, name, value);
    return value;
  }

  // ------------------------------------------------------------------------------------------------
  // Observe (RFC 7641), and polling where observing fails

  private observation(node: CoapNode, generation: number, name: string): Observation {
    return {
      node,
      generation,
      name,
      mode: 'observe',
      registering: false,
      lastNotify: Date.now(),
      refreshMs: this.config.observeRefreshMs,
    };
  }

  /**
   * (Re-)registers an observation (RFC 7641 §3.1: GET with Observe 0) and keeps it tracked while registered.
   * 'no-answer' when the node does not answer; 'refused' for an error code or an answer without Observe (§3.2:
   * the node did not register us): the caller then reads and polls the resource instead.
   */
  private register(o: Observation): Promise<'observing' | 'refused' | 'no-answer'> {
    const { node, generation, name } = o;
    const agent = this.agent;
    if (agent === undefined || !this.alive(node, generation)) return Promise.resolve('no-answer');
    // Forget the old token first; the node's next notification for it gets a RST and it drops it (§3.6).
    o.stream?.close();
    o.stream = undefined;
    o.registering = true;
    o.lastNotify = Date.now();
    const req = agent.request({
      hostname: node.address,
      port: this.targetPort(node),
      method: 'GET',
      pathname: `/${name}`,
      observe: true,
    });
    return new Promise((resolve) => {
      const failed = (err?: Error) => {
        clearTimeout(timer);
        o.registering = false;
        this.log.debug({ err, uid: node.uid, resource: name }, 'observe registration failed');
        resolve('no-answer');
      };
      const timer = setTimeout(() => {
        agent.abort(req);
        failed();
      }, this.config.requestTimeoutMs);
      req.on('error', failed);
      req.on('response', (res: ObserveReadStream) => {
        clearTimeout(timer);
        o.registering = false;
        res.on('error', () => {});
        if (!this.alive(node, generation)) {
          res.close();
          return resolve('no-answer');
        }
        if (res.code !== '2.05' || typeof res.headers.Observe !== 'number') {
          this.log.debug({ uid: node.uid, resource: name, code: res.code }, 'observation refused; polling instead');
          this.closeObservation(o);
          res.close();
          return resolve('refused');
        }
        const maxAge = typeof res.headers['Max-Age'] === 'number' ? res.headers['Max-Age'] : DEFAULT_MAX_AGE_S;
        // Renew after the longer of the configured silence and the freshness the node promised.
        o.refreshMs = Math.max(this.config.observeRefreshMs, maxAge === DEFAULT_MAX_AGE_S ? 0 : maxAge * 1000);
        o.stream = res;
        o.lastNotify = Date.now();
        this.addObservation(o);
        this.counters.observeRegistrations.inc();
        this.report(node, name, '2.05', res.payload);
        res.on('data', (chunk: Buffer) => {
          if (o.stream !== res) return;
          o.lastNotify = Date.now();
          node.lastSeen = o.lastNotify;
          this.counters.notifications.inc();
          if (this.alive(node, generation)) this.report(node, name, '2.05', chunk);
        });
        resolve('observing');
      });
      req.end();
    });
  }

  /**
   * One plain GET (node-coap reassembles Block2 answers, RFC 7959) of a resource that could not be observed.
   * A readable answer turns it into a poll, repeated every --poll-interval-ms; changed values are reported.
   */
  private async poll(o: Observation): Promise<'ok' | 'unreadable' | 'no-answer'> {
    const { node, generation, name } = o;
    if (!this.alive(node, generation)) return 'no-answer';
    o.registering = true;
    o.lastNotify = Date.now();
    this.counters.polls.inc();
    const answer = await this.request(node, 'GET', `/${name}`);
    o.registering = false;
    o.lastNotify = Date.now();
    if (!this.alive(node, generation)) return 'no-answer';
    if (answer.kind !== 'response') return 'no-answer'; // a polling resource is tried again next period
    node.lastSeen = o.lastNotify;
    if (answer.code !== '2.05') {
      this.report(node, name, answer.code, answer.payload);
      this.closeObservation(o);
      return 'unreadable';
    }
    const text = decodeUtf8(answer.payload);
    if (text !== o.last) o.last = this.report(node, name, answer.code, answer.payload);
    if (o.mode !== 'poll') {
      o.mode = 'poll';
      o.refreshMs = this.config.pollIntervalMs;
      this.addObservation(o);
    }
    return 'ok';
  }

  private addObservation(o: Observation): void {
    (o.mode === 'poll' ? this.polls : this.observations).add(o);
    let set = this.nodeObservations.get(o.node);
    if (set === undefined) {
      set = new Set();
      this.nodeObservations.set(o.node, set);
    }
    set.add(o);
  }

  private closeObservation(o: Observation): void {
    this.observations.delete(o);
    this.polls.delete(o);
    this.nodeObservations.get(o.node)?.delete(o);
    // Closing forgets the token; the node's next notification gets a RST and it drops us (RFC 7641 §3.6).
    o.stream?.close();
    o.stream = undefined;
  }

  private dropObservations(node: CoapNode): void {
    const set = this.nodeObservations.get(node);
    if (set === undefined) return;
    for (const o of set) this.closeObservation(o);
    this.nodeObservations.delete(node);
  }

  // ------------------------------------------------------------------------------------------------
  // Writes (pyaiot-protocol §4.4, with results)

  private async write(uid: string, endpoint: string, payload: Json): Promise<WriteOutcome> {
    const node = this.table.get(uid);
    if (node === undefined) return { result: 'error', reason: 'unknown-node' };
    // UTF-8, not pyaiot's ASCII; JSON values that are not strings travel as their JSON text.
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    const answer = await this.request(node, 'PUT', `/${endpoint}`, Buffer.from(text, 'utf8'));
    let outcome: WriteOutcome;
    if (answer.kind === 'timeout') outcome = { result: 'timeout' };
    else if (answer.kind === 'error') outcome = { result: 'error', reason: answer.err.message };
    // RFC 7252 §5.8.3: PUT succeeds with 2.04 Changed or 2.01 Created; pyaiot's test node answers 2.05.
    else if (answer.code === '2.04' || answer.code === '2.05' || answer.code === '2.01') {
      outcome = { result: 'ok' };
      this.core?.nodeUpdate(uid, endpoint, text);
    } else outcome = { result: 'error', reason: answer.code };
    this.counters.writes(outcome.result).inc();
    return outcome;
  }

  // ------------------------------------------------------------------------------------------------

  private targetPort(node: CoapNode): number {
    if (this.config.nodePort > 0) return this.config.nodePort;
    return node.serve === 'fallback' ? this.config.fallbackNodePort : node.port;
  }

  /**
   * One request to a node, answered, timed out (requestTimeoutMs) or failed; never rejects. Confirmable, except
   * the probe: non-confirmable (no retransmissions to an unverified address), no path, a 4-byte token.
   */
  private request(
    node: CoapNode,
    method: 'GET' | 'PUT',
    pathname: string | undefined,
    payload?: Buffer,
    probe?: { port: number; probe: true },
  ): Promise<Answer> {
    const agent = this.agent;
    if (agent === undefined) return Promise.resolve({ kind: 'error', err: new Error('gateway stopped') });
    const req = agent.request(
      probe === undefined
        ? { hostname: node.address, port: this.targetPort(node), method, pathname }
        : {
            hostname: node.address,
            port: probe.port,
            method,
            confirmable: false,
            token: randomBytes(PROBE_TOKEN_BYTES),
          },
    );
    return new Promise<Answer>((resolve) => {
      const timer = setTimeout(() => {
        agent.abort(req);
        resolve({ kind: 'timeout' });
      }, this.config.requestTimeoutMs);
      req.on('response', (res: IncomingMessage) => {
        clearTimeout(timer);
        resolve({ kind: 'response', code: res.code, payload: res.payload });
      });
      req.on('timeout', () => {
        clearTimeout(timer);
        resolve({ kind: 'timeout' });
      });
      req.on('error', (err: Error) => {
        clearTimeout(timer);
        resolve({ kind: 'error', err });
      });
      req.end(payload);
    });
  }
}

/**
 * Bytes a request brought beyond our empty answer to it (which repeats its header and token): a lower bound of
 * its options (at least one header byte each) and payload (with the 0xFF marker). RFC 7252 §3.
 */
function surplus(req: IncomingMessage): number {
  let n = 0;
  for (const o of req._packet.options ?? []) n += 1 + (o.value?.length ?? 0);
  const p = req.payload.length;
  return n + (p > 0 ? 1 + p : 0);
}

/** pyaiot reported the socket's view (::ffff:1.2.3.4); the plain IPv4 form is what people recognise. */
export function displayAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** [gw-reports] `host:port` of a bound socket, IPv6 in brackets (RFC 3986 §3.2.2), for the inventory. */
export function hostPort(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
