// The CoAP gateway: RIOT nodes POST /alive beacons and /server values to it; it discovers each node's resources
// (GET /.well-known/core, then GET or Observe each one), writes with PUT, and sends `out` for silent nodes.
// Wire-compatible with pyaiot's RIOT firmware (pyaiot-protocol §4); see docs/gateways/coap.md.
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
import { type Counter, Metrics } from '../../services/broker/metrics.ts';
import type { Logger } from '../../services/common/log.ts';
import type { Json, OutReason } from '../../services/protocol/messages.ts';
import { GatewayCore, type WriteOutcome } from '../common/gateway-core.ts';
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

export interface CoapGatewayDeps {
  log: Logger;
  /** Broker token source; default: `--token` or a token minted from `--key-file`. */
  tokenSource?: () => Promise<string>;
}

type Answer = { kind: 'response'; code: string; payload: Buffer } | { kind: 'timeout' } | { kind: 'error'; err: Error };

interface Observation {
  node: CoapNode;
  generation: number;
  name: string;
  /** The live registration; undefined while (re-)registering or after a failed attempt. */
  stream?: ObserveReadStream;
  registering: boolean;
  /** Last notification, or last registration attempt: the sweep renews after `refreshMs` of this. */
  lastNotify: number;
  /** Silence after which the registration is renewed. */
  refreshMs: number;
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
  linkFormatErrors: Counter;
  notifications: Counter;
  observeRegistrations: Counter;
  observeRenewals: Counter;
  bad: (reason: string) => Counter;
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
  private readonly observations = new Set<Observation>();
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
  /** Event-loop stalls are when the kernel's UDP receive buffer can overflow; worth watching. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  private running = false;

  constructor(config: CoapGatewayConfig, deps: CoapGatewayDeps) {
    this.config = config;
    this.log = deps.log;
    this.tokenSource = deps.tokenSource;
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
      linkFormatErrors: r.counter('link_format_errors_total', 'discovery answers with unparsable links'),
      notifications: r.counter('notifications_total', 'RFC 7641 notifications received'),
      observeRegistrations: r.counter('observe_registrations_total', 'observations registered'),
      observeRenewals: r.counter('observe_renewals_total', 'observations renewed after silence'),
      bad: r.counterFamily('bad_requests_total', 'requests refused with a 4.xx code', 'reason'),
      writes: r.counterFamily('writes_total', 'writes to nodes by result', 'result'),
      outs: r.counterFamily('out_total', 'nodes gone out by reason', 'reason'),
    };
    r.gauge('nodes', 'nodes known to the gateway', () => this.table.size);
    r.gauge('observations', 'active observations', () => this.observations.size);
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
    });
    this.core.onWrite((uid, endpoint, payload) => this.write(uid, endpoint, payload));

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
      if (path !== '/alive' && path !== '/server') return this.refuse(res, '4.04', 'unknown-path', 'no such resource');
      // RFC 7252 §5.8.2: POST; anything else on these paths is 4.05.
      if (req.method !== 'POST') return this.refuse(res, '4.05', 'method', 'only POST');
      const payload = req.payload;
      if (payload.length > this.config.maxPayloadBytes) {
        // RFC 7252 §5.9.2.9: 4.13 with Size1 saying what would have been accepted.
        res.setOption('Size1', this.config.maxPayloadBytes);
        return this.refuse(res, '4.13', 'too-large', 'payload too large');
      }
      const text = decodeUtf8(payload);
      if (text === undefined) return this.refuse(res, '4.00', 'bad-utf8', 'payload is not UTF-8');
      const { address, port } = req.rsinfo;
      if (path === '/alive') {
        const beacon = parseBeacon(text);
        if (!beacon.ok) return this.refuse(res, beacon.code, 'bad-beacon', beacon.reason);
        this.onBeacon(beacon.uid, beacon.reset, address, port);
      } else {
        const node = this.table.findBySource(address, port);
        if (node === undefined) {
          this.counters.unknownSender.inc();
          this.log.debug({ address, port }, 'value post from an unknown node');
          return this.reply(res, '4.04', 'unknown node: POST /alive first');
        }
        const post = parseValuePost(text);
        if (!post.ok) return this.refuse(res, post.code, 'bad-value', post.reason);
        node.lastSeen = Date.now();
        this.counters.values.inc();
        this.core!.nodeUpdate(node.uid, post.resource, post.value);
      }
      // pyaiot answered 2.04 with this text; RIOT never reads it, other tools may print it.
      this.reply(res, '2.04', `Received '${text}'`);
    } catch (err) {
      this.log.error({ err }, 'CoAP request handler failed');
      this.reply(res, '5.00', 'internal error');
    }
  }

  private reply(res: OutgoingMessage, code: string, text: string): void {
    res.code = code;
    res.end(text);
  }

  private refuse(res: OutgoingMessage, code: string, reason: string, text: string): void {
    this.counters.bad(reason).inc();
    this.reply(res, code, text);
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
    this.log.debug({ address: rsinfo.address, port: rsinfo.port, reason: text }, 'malformed CoAP datagram dropped');
    const raw = this.lastRaw;
    // Version 1 and type CON (RFC 7252 §3): send RST with the same Message ID.
    if (raw !== undefined && raw.length >= 4 && raw[0] >> 6 === 1 && ((raw[0] >> 4) & 3) === 0) {
      const rst = Buffer.from([0x70, 0x00, raw[2], raw[3]]);
      this.socket?.send(rst, rsinfo.port, rsinfo.address);
    }
  }

  private onBeacon(uid: string, reset: boolean, address: string, port: number): void {
    this.counters.beacons.inc();
    const core = this.core!;
    const now = Date.now();
    const node = this.table.get(uid);
    if (node === undefined) {
      const fresh: CoapNode = {
        uid,
        address,
        port,
        lastSeen: now,
        generation: 0,
        discovering: false,
        discoveryFailedAt: 0,
      };
      this.table.add(fresh);
      this.counters.nodesNew.inc();
      core.nodeNew(uid, this.ownResources(fresh));
      this.log.debug({ uid, address, port, reset }, 'node appeared');
      this.enqueueDiscovery(fresh);
      return;
    }
    node.lastSeen = now;
    const moved = node.address !== address || node.port !== port;
    if (moved) {
      const ipChanged = node.address !== address;
      this.table.move(node, address, port);
      this.counters.rebinds.inc();
      this.log.info({ uid, address, port }, 'node heard from a new address; writes go there now');
      if (ipChanged) core.nodeUpdate(uid, 'ip', displayAddress(address));
      // Observations were registered at the old endpoint and will not reach us any more.
      if (!reset && this.nodeObservations.has(node)) this.renewObservations(node);
    }
    if (reset) {
      // The node rebooted: its values and any observations are void. One `reset` to clients, no `out`.
      this.counters.resets.inc();
      node.generation++;
      this.dropObservations(node);
      core.nodeReset(uid);
      for (const [k, v] of Object.entries(this.ownResources(node))) core.nodeUpdate(uid, k, v);
      this.enqueueDiscovery(node);
    } else if (node.discoveryFailedAt > 0 && (moved || now - node.discoveryFailedAt >= this.config.discoveryRetryMs)) {
      // The node beacons but did not answer discovery: maybe it was busy, maybe it moved. Try again.
      this.enqueueDiscovery(node);
    }
  }

  private ownResources(node: CoapNode): Record<string, Json> {
    return { protocol: PROTOCOL, ip: displayAddress(node.address) };
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
        void this.register(o);
      }
    }
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
          if (node.generation !== generation && this.running && this.table.get(node.uid) === node) {
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
    for (const link of links) {
      const name = resourceName(link.target);
      if (name === undefined) continue;
      if (link.obs && !this.config.ignoreObs) {
        const o: Observation = {
          node,
          generation: gen,
          name,
          registering: false,
          lastNotify: Date.now(),
          refreshMs: this.config.observeRefreshMs,
        };
        const ok = await this.register(o);
        if (!this.alive(node, gen)) return;
        if (!ok) return this.discoveryFailed(node, { kind: 'timeout' }, name);
        continue;
      }
      const value = await this.request(node, 'GET', `/${name}`);
      if (!this.alive(node, gen)) return;
      if (value.kind !== 'response') return this.discoveryFailed(node, value, name);
      this.report(node, name, value.code, value.payload);
    }
    this.counters.discoveryOk.inc();
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

  private report(node: CoapNode, name: string, code: string, payload: Buffer): void {
    if (code !== '2.05') {
      this.log.debug({ uid: node.uid, resource: name, code }, 'resource not readable');
      return;
    }
    const value = decodeUtf8(payload);
    if (value === undefined) {
      this.counters.bad('node-bad-utf8').inc();
      this.log.warn({ uid: node.uid, resource: name }, 'resource value is not UTF-8; dropped');
      return;
    }
    this.core!.nodeUpdate(node.uid, name, value);
  }

  // ------------------------------------------------------------------------------------------------
  // Observe (RFC 7641)

  /**
   * (Re-)registers an observation (RFC 7641 §3.1: GET with Observe 0) and keeps it tracked while registered.
   * Resolves false when the node does not answer. A response without Observe (§3.2) reports the value once.
   */
  private register(o: Observation): Promise<boolean> {
    const { node, generation, name } = o;
    const agent = this.agent;
    if (agent === undefined || !this.alive(node, generation)) return Promise.resolve(false);
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
    return new Promise<boolean>((resolve) => {
      const failed = (err?: Error) => {
        clearTimeout(timer);
        o.registering = false;
        this.log.debug({ err, uid: node.uid, resource: name }, 'observe registration failed');
        resolve(false);
      };
      const timer = setTimeout(() => {
        agent.abort(req);
        failed();
      }, this.config.requestTimeoutMs);
      req.on('error', failed);
      req.on('response', (res: ObserveReadStream) => {
        clearTimeout(timer);
        o.registering = false;
        resolve(true);
        if (!this.alive(node, generation)) return res.close();
        if (res.code !== '2.05' || typeof res.headers.Observe !== 'number') {
          this.report(node, name, res.code, res.payload);
          this.closeObservation(o);
          res.close();
          return;
        }
        const maxAge = typeof res.headers['Max-Age'] === 'number' ? res.headers['Max-Age'] : DEFAULT_MAX_AGE_S;
        // Renew after the longer of the configured silence and the freshness the node promised.
        o.refreshMs = Math.max(this.config.observeRefreshMs, maxAge === DEFAULT_MAX_AGE_S ? 0 : maxAge * 1000);
        o.stream = res;
        o.lastNotify = Date.now();
        this.addObservation(o);
        this.counters.observeRegistrations.inc();
        res.on('data', (chunk: Buffer) => {
          if (o.stream !== res) return;
          o.lastNotify = Date.now();
          node.lastSeen = o.lastNotify;
          this.counters.notifications.inc();
          if (this.alive(node, generation)) this.report(node, name, '2.05', chunk);
        });
        res.on('error', () => {});
      });
      req.end();
    });
  }

  private addObservation(o: Observation): void {
    this.observations.add(o);
    let set = this.nodeObservations.get(o.node);
    if (set === undefined) {
      set = new Set();
      this.nodeObservations.set(o.node, set);
    }
    set.add(o);
  }

  private closeObservation(o: Observation): void {
    this.observations.delete(o);
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

  private renewObservations(node: CoapNode): void {
    const set = this.nodeObservations.get(node);
    if (set === undefined) return;
    for (const o of set) if (!o.registering) void this.register(o);
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
    return this.config.nodePort > 0 ? this.config.nodePort : node.port;
  }

  /** One confirmable request to a node, answered, timed out (requestTimeoutMs) or failed; never rejects. */
  private request(node: CoapNode, method: 'GET' | 'PUT', pathname: string, payload?: Buffer): Promise<Answer> {
    const agent = this.agent;
    if (agent === undefined) return Promise.resolve({ kind: 'error', err: new Error('gateway stopped') });
    const req = agent.request({ hostname: node.address, port: this.targetPort(node), method, pathname });
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

/** pyaiot reported the socket's view (::ffff:1.2.3.4); the plain IPv4 form is what people recognise. */
export function displayAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
