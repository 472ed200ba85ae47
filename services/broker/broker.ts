// The broker: links web clients (/ws) and gateways (/gw), holds the current state of every node, serves
// the REST API, and routes node events and writes through the bus so several brokers can share the load.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { hostname } from 'node:os';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Bus, BusMsg, BusSubscription } from '../bus/bus.ts';
import { MemoryBus } from '../bus/memory-bus.ts';
import { eventsSubjectOrg, subjects } from '../bus/subjects.ts';
import type { ConfigOf } from '../common/config.ts';
import { ConnectionCounter } from '../common/limits.ts';
import type { tokenPolicyOptions } from '../common/token-policy.ts';
import type { Logger } from '../common/log.ts';
import {
  extractToken,
  type TokenClaims,
  type VerifyOptions,
  type VerifyResult,
  verifyToken,
} from '../common/tokens.ts';
import { CloseCode, ErrorCode } from '../protocol/errors.ts';
import { MAX_RESOURCES_PER_NODE, parseBrokerToClientFrame } from '../protocol/frames.ts';
import type { GatewayRecord, NodeRecord, Role } from '../protocol/messages.ts';
import { isIdentifier, MAX_ID_LENGTH, parseJson, stringifySafe } from '../protocol/schema.ts';
import { CLIENT_ROLES, type ClientDirectory, ClientSession, type ClientSessionDeps } from './client-session.ts';
import { brokerCounters } from './counters.ts';
import { EventLatency } from './event-latency.ts';
import { CorkedWriter, rawSocket, textFrame, textFrameOf } from './fanout.ts';
import { GatewaySession, type GatewaySessionDeps } from './gateway-session.ts';
import { type HttpAuth, registerHttpApi } from './http-api.ts';
import { Metrics } from '../common/metrics.ts';
import { type NodeEvent, NodeTable } from './node-table.ts';
import { PeerDirectory } from './peers.ts';
import type { BrokerCounters, EventPublisher, GracePeriods, NodeAdmission, NodeRefusal, TokenCheck } from './ports.ts';
import type { brokerOptions } from './options.ts';
import { createOwnership, type OwnershipRegistry, ownerLost, ownershipOptions } from './ownership.ts';
import { pathOf, refuseUpgrade } from '../common/upgrade.ts';
// [accounts] API keys and the revocation broadcast of the accounts service
import { ApiKeyVerifier } from '../accounts/verifier.ts';
import { canSee, type OrgDirectory, type Scoped } from './scope.ts';
import { OrgTraffic } from './org-metrics.ts';
import { WriteRouter } from './writes.ts';
// [gw-reports] gateway inventory, status reports and actions (issue 11, item 7)
import { ActionRouter } from './gateway-actions.ts';
import { type GatewayReportConfig, GatewayReports, gatewayReportOptions } from './gateway-reports.ts';
import type { BrokerToClientMessage } from '../protocol/messages.ts';
// [console] the device console (issue 12)
import { AuditLog } from '../console/audit.ts';
import { consoleOptions, ExecRouter } from './exec-router.ts';
// [accounts-ui] the dashboard origins allowed to sign in and write cross-origin
import { allowDashboardOrigins, type corsOptions } from './cors.ts';

export type BrokerConfig = Omit<
  ConfigOf<typeof brokerOptions>,
  | 'keyFile'
  | 'publicKeyFile'
  | 'natsUrl'
  | 'brokerId'
  | keyof typeof ownershipOptions
  | keyof typeof tokenPolicyOptions
  | keyof typeof gatewayReportOptions
  | keyof typeof consoleOptions
  | keyof typeof corsOptions
> &
  Partial<ConfigOf<typeof consoleOptions>> &
  Partial<ConfigOf<typeof corsOptions>> &
  Partial<ConfigOf<typeof ownershipOptions>> &
  Partial<GatewayReportConfig> & {
    brokerId?: string;
  };

export interface BrokerDeps {
  /** Verification key for tokens. */
  publicKey: import('node:crypto').KeyObject;
  log: Logger;
  /** The bus; an in-process one is made (and owned) when absent. */
  bus?: Bus;
  /** Revoked token ids: refused at the upgrade and on REST, and open sessions closed (4401) within a sweep. */
  revocations?: { isRevoked(jti?: string): boolean };
  /** Longest token lifetime accepted per role (--max-token-ttl); none when absent. */
  maxTtlSeconds?: Partial<Record<Role, number>>;
  /** [accounts] API keys (`Bearer myk_…`) and the revoked keys and disabled users; made on the bus when absent. */
  apiKeys?: ApiKeyVerifier;
}

const GATEWAY_ROLES: readonly Role[] = ['gateway'];
/** [accounts] Keyed devices on org-less gateways whose organisation the broker remembers (about 100 B each). */
const MAX_KEYED_DEVICE_ORGS = 200_000;

/** What the state-sync request returns: the nodes and gateways this broker owns. */
interface StateSyncReply {
  broker: string;
  nodes: NodeRecord[];
  gateways: GatewayRecord[];
}

export class Broker implements EventPublisher, NodeAdmission, TokenCheck, GracePeriods, ClientDirectory, HttpAuth {
  readonly id: string;
  readonly table = new NodeTable();
  readonly metrics = new Metrics();
  readonly log: Logger;
  readonly bus: Bus;
  readonly writes: WriteRouter;
  /** Gateways connected to this broker, by gateway id. */
  readonly gateways = new Map<string, GatewaySession>();
  /** Peer brokers on the same bus and the gateways they hold. */
  readonly peers: PeerDirectory;
  /** Which gateway owns each node uid: decided once for the whole cluster (ownership.ts). */
  readonly ownership: OwnershipRegistry;
  /** [gw-reports] Every gateway's last inventory and status (this broker's and its peers'). */
  readonly gatewayReports: GatewayReports;
  /** [accounts] API keys verified through the accounts service; revoked keys and disabled users. */
  readonly apiKeys: ApiKeyVerifier;
  /** [accounts] The organisation of each gateway with one (its token's `org`), here and on peers (their claims). */
  private readonly gatewayOrgs = new Map<string, string>();
  /** [accounts] Registered clients without an org (system-wide), and those of each org: the fan-out's groups. */
  private readonly wideClients = new Set<ClientSession>();
  private readonly orgClients = new Map<string, Set<ClientSession>>();
  /** [accounts] Per-organisation traffic for an organisation's own /metrics (org-metrics.ts). */
  readonly orgTraffic = new OrgTraffic();
  /** [accounts] Which org owns a node or gateway, for every path that shows one (scope.ts). */
  readonly orgs: OrgDirectory = {
    nodeOrg: (uid) => {
      const node = this.table.get(uid);
      return node === undefined ? undefined : this.orgOfNode(uid, node.gateway);
    },
    gatewayOrg: (gatewayId) => this.gatewayOrgs.get(gatewayId),
  };
  /**
   * [accounts] Devices admitted by their key on a gateway without an organisation (the operator's own, e.g. the
   * gateways of `mycelium up`): `<gateway>\n<uid>` -> the key's organisation. A gateway of an organisation admits
   * only that organisation's keys, so its nodes need no entry. Kept across the gateway's reconnects (the gateway
   * does not ask again for a device still connected); bounded, oldest first out.
   */
  private readonly keyedDeviceOrgs = new Map<string, string>();
  /** [gw-reports] Actions to gateways, wherever they are connected. */
  readonly actions: ActionRouter;
  /** [console] Console requests from this broker's clients, and to the gateways connected here. */
  readonly exec: ExecRouter;
  /** [console] --audit-file (in memory when absent). */
  readonly audit: AuditLog;
  /** Registered web clients (they sent `new`): they receive the live stream. */
  private readonly registered = new Set<ClientSession>();
  private readonly clients = new Set<ClientSession>();
  private readonly writer = new CorkedWriter();
  private readonly ownsBus: boolean;
  /** [accounts] This broker's events subject per organisation ('' for none): `myc.events.<org>.<broker>`. */
  private readonly eventSubjects = new Map<string, string>();
  /** The same subjects, to recognise this broker's own events coming back from NATS. */
  private readonly ownEventSubjects = new Set<string>();
  private readonly app: FastifyInstance;
  private readonly wss: WebSocketServer;
  private subs: BusSubscription[] = [];
  private pingTimer?: NodeJS.Timeout;
  private sessionTimer?: NodeJS.Timeout;
  private evictTimer?: NodeJS.Timeout;
  /** Open TCP connections per client address (finding 10 of issue 10: one address cannot hold the port). */
  private readonly connections: ConnectionCounter;
  /** Connections accepted beyond their address's cap: answered 429 at their request or upgrade. */
  private readonly overCap = new WeakSet<object>();
  /** The token claims each gateway connection was opened with (its exp and jti end the session). */
  private readonly gatewayClaims = new WeakMap<GatewaySession, TokenClaims>();
  /** Set while the node table is full, so the refusal is logged once, not per frame. */
  private nodeCapLogged = false;
  private readonly maxResourcesPerNode: number;
  private started = false;
  private stopping?: Promise<void>;
  /** The event this broker just published on an in-process bus: delivered synchronously, so no re-parse. */
  private localEvent?: {
    bytes: Uint8Array;
    frame: Buffer;
    event: NodeEvent;
    receivedAt: number | undefined;
    /** [accounts] Decided once, for the subject: the fan-out reuses it. */
    org: string | undefined;
  };
  /** Times this broker's events from frame arrival to client sockets (message_latency_seconds). */
  private readonly latency: EventLatency;
  /** What every gateway session is given (one object for all of them). */
  private readonly gatewayDeps: GatewaySessionDeps;
  /** What every client session is given. */
  private readonly clientDeps: ClientSessionDeps;

  readonly counters: BrokerCounters;

  constructor(
    readonly config: BrokerConfig,
    private readonly deps: BrokerDeps,
  ) {
    this.id = config.brokerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 4)}`;
    this.log = deps.log.child({ broker: this.id });
    this.ownsBus = deps.bus === undefined;
    this.bus = deps.bus ?? new MemoryBus((err, subject) => this.log.error({ err, subject }, 'bus handler failed'));
    this.apiKeys = deps.apiKeys ?? new ApiKeyVerifier(this.bus, this.log.child({ component: 'api-keys' })); // [accounts]
    const m = this.metrics;
    this.counters = brokerCounters(m);
    this.latency = new EventLatency(this.counters.messageSeconds);
    this.connections = new ConnectionCounter(config.maxConnectionsPerAddress);
    this.maxResourcesPerNode = Math.min(config.maxResourcesPerNode, MAX_RESOURCES_PER_NODE);
    m.gauge('connections', 'open WebSocket connections', () => this.gateways.size, { kind: 'gateway' });
    m.gauge('connections', 'open WebSocket connections', () => this.clients.size, { kind: 'client' });
    m.gauge('nodes', 'known nodes', () => this.table.countByStatus('online'), { status: 'online' });
    m.gauge('nodes', 'known nodes', () => this.table.countByStatus('offline'), { status: 'offline' });
    this.writes = new WriteRouter({
      bus: this.bus,
      counters: this.counters,
      writeTimeoutMs: config.writeTimeoutMs,
      auditSubject: subjects.writes(this.id),
    });
    this.ownership = createOwnership({
      bus: this.bus,
      statusOf: (uid) => this.table.get(uid)?.status,
      recordOf: (uid) => this.table.get(uid),
      log: this.log,
      local: config.localOwnership,
      timeoutMs: config.ownershipTimeoutMs,
      concurrency: config.ownershipConcurrency,
    });
    this.table.onOwnerLost = (node, why) => ownerLost(this, node, why);
    // [gw-reports]
    const d = gatewayReportOptions;
    this.gatewayReports = new GatewayReports({
      brokerId: this.id,
      log: this.log,
      bus: this.bus,
      counters: this.counters,
      broadcast: (text) => {
        if (this.registered.size > 0) this.fanOut(textFrameOf(text).frame, this.reportOrg(text));
      },
      config: {
        gatewayReportMinIntervalMs: config.gatewayReportMinIntervalMs ?? d.gatewayReportMinIntervalMs.default,
        gatewayReportTtlMs: config.gatewayReportTtlMs ?? d.gatewayReportTtlMs.default,
        gatewayHistory: config.gatewayHistory ?? d.gatewayHistory.default,
      },
    });
    this.actions = new ActionRouter({
      bus: this.bus,
      counters: this.counters,
      timeoutMs: config.actionTimeoutMs ?? d.actionTimeoutMs.default,
    });
    // [console]
    this.audit = new AuditLog(config.auditFile, this.log);
    this.exec = new ExecRouter({
      brokerId: this.id,
      bus: this.bus,
      log: this.log,
      counters: this.counters,
      table: this.table,
      audit: this.audit,
      options: { graceMs: config.execGraceMs ?? consoleOptions.execGraceMs.default },
    });
    this.peers = new PeerDirectory({
      brokerId: this.id,
      bus: this.bus,
      log: this.log,
      gateways: this.gateways,
      grace: this,
      intervalMs: config.peerHeartbeatMs,
    });
    this.gatewayDeps = {
      brokerId: this.id,
      log: this.log,
      counters: this.counters,
      table: this.table,
      events: this,
      admission: this,
      ownership: this.ownership,
      writes: this.writes,
      connected: {
        has: (gatewayId) => this.gateways.has(gatewayId),
        gatewayGone: (session) => this.gatewayGone(session),
      },
      grace: this,
      maxClaimQueue: config.maxClaimQueue ?? ownershipOptions.maxClaimQueue.default,
      reports: this.gatewayReports, // [gw-reports]
      actions: this.actions, // [gw-reports]
      exec: this.exec, // [console]
      apiKeys: this.apiKeys, // [accounts]
      deviceOrg: (gatewayId, uid, org) => this.noteDeviceOrg(gatewayId, uid, org), // [accounts]
    };
    this.clientDeps = {
      brokerId: this.id,
      log: this.log,
      counters: this.counters,
      table: this.table,
      writes: this.writes,
      tokens: this,
      clients: this,
      orgs: this.orgs, // [accounts]
      config,
      actions: this.actions, // [gw-reports]
      exec: this.exec, // [console]
    };
    const handshake = config.handshakeTimeoutMs;
    this.app = Fastify({
      logger: false,
      bodyLimit: config.maxFrameBytes,
      // A uid or resource name may be MAX_ID_LENGTH characters, each up to 9 bytes percent-encoded (3 UTF-8
      // bytes); the router's default of 100 answered 414 for valid identifiers. The schema checks the rest.
      routerOptions: { maxParamLength: MAX_ID_LENGTH * 9 },
      // Finding 10 of issue 10: a connection that never finishes its request (or upgrade) is closed after
      // --handshake-timeout-ms, not after Node's 60-300 s defaults. The idle timeout catches a silent socket
      // (ws clears it once upgraded); headers/request timeouts catch a slow one, checked often enough to matter.
      connectionTimeout: handshake,
      requestTimeout: handshake,
      http: { headersTimeout: handshake, connectionsCheckingInterval: Math.max(10, Math.min(1000, handshake / 2)) },
    });
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: config.maxFrameBytes,
      perMessageDeflate: false,
      // Browsers send the token as the subprotocol pair `bearer, <jwt>`; the handshake must echo one of them.
      handleProtocols: (protocols) => (protocols.has('bearer') ? 'bearer' : protocols.has('token') ? 'token' : false),
    });
    allowDashboardOrigins(this.app, config.dashboardOrigin); // [accounts-ui] read by cors.ts
  }

  /** The bound port, once started. */
  get port(): number {
    const addr = this.app.server.address();
    return typeof addr === 'object' && addr !== null ? addr.port : 0;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** What verifyToken checks beyond the signature: revocation and the maximum lifetime per role. */
  private get verifyOptions(): VerifyOptions {
    const options: VerifyOptions = {};
    if (this.deps.revocations !== undefined) options.revocations = this.deps.revocations;
    if (this.deps.maxTtlSeconds !== undefined) options.maxTtlSeconds = this.deps.maxTtlSeconds;
    return options;
  }

  async verify(token: string | undefined, roles: readonly Role[]): Promise<VerifyResult> {
    // [accounts] An API key is checked by the accounts service (cached); a JWT of a disabled user is revoked.
    if (ApiKeyVerifier.looksLikeKey(token)) return this.apiKeys.verify(token, roles);
    const result = await verifyToken(this.deps.publicKey, token, roles, this.verifyOptions);
    if (result.ok && this.apiKeys.isRevoked(result.claims.jti)) return { ok: false, reason: 'revoked' };
    return result;
  }

  /** Why a session opened with `claims` must end now (4401), or undefined while its token holds. */
  tokenEnded(claims: TokenClaims, now: number): 'expired' | 'revoked' | undefined {
    if (claims.exp !== undefined && claims.exp * 1000 <= now) return 'expired';
    if (claims.jti !== undefined && this.deps.revocations?.isRevoked(claims.jti)) return 'revoked';
    if (this.apiKeys.isRevoked(claims.jti)) return 'revoked'; // [accounts]
    return undefined;
  }

  /** True when this request's connection is beyond its address's cap (answered 429). */
  overConnectionCap(socket: object): boolean {
    return this.overCap.has(socket);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.ownsBus) await this.bus.start();
    await this.ownership.start();
    this.subs.push(
      this.bus.subscribe(subjects.allEvents, (msg) => this.onBusEvent(msg)),
      this.bus.subscribe(subjects.allGatewayClaims, (msg) => this.onGatewayClaim(msg)),
      this.bus.subscribe(subjects.stateSync, (msg) => this.onStateSyncRequest(msg)),
    );
    this.apiKeys.start(); // [accounts]
    this.gatewayReports.start(); // [gw-reports]
    await this.bus.flush();
    await this.syncStateFromPeers();
    this.peers.start();
    registerHttpApi(this.app, {
      brokerId: this.id,
      log: this.log,
      counters: this.counters,
      metrics: this.metrics,
      bus: this.bus,
      table: this.table,
      gateways: this.gateways,
      peers: this.peers,
      writes: this.writes,
      ownership: this.ownership,
      events: this,
      auth: this,
      orgs: this.orgs, // [accounts]
      orgMetrics: {
        table: this.table,
        orgs: this.orgs,
        traffic: this.orgTraffic,
        gatewayIds: () => new Set([...this.gateways.keys(), ...this.peers.remoteGateways().map((g) => g.id)]),
      }, // [accounts]
      config: this.config,
      reports: this.gatewayReports, // [gw-reports]
      actions: this.actions, // [gw-reports]
      exec: this.exec, // [console]
      audit: this.audit, // [console]
      openApiDocument: async () => (await import('./openapi.ts')).openApiDocument(),
    });
    this.app.server.on('connection', (socket: Socket) => this.onConnection(socket));
    this.app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', (err) => this.log.debug({ err }, 'socket error during upgrade'));
      this.onUpgrade(req, socket, head).catch((err) => {
        this.log.error({ err }, 'upgrade failed');
        refuseUpgrade(socket, 400, 'upgrade failed');
      });
    });
    await this.app.listen({ port: this.config.port, host: this.config.host });
    this.pingTimer = setInterval(() => this.heartbeat(), this.config.pingIntervalMs);
    this.pingTimer.unref();
    this.sessionTimer = setInterval(() => this.sweepSessions(), this.config.sessionSweepMs);
    this.sessionTimer.unref();
    this.evictTimer = setInterval(() => this.evictOffline(), this.config.offlineSweepMs);
    this.evictTimer.unref();
    this.log.info({ port: this.port, bus: this.bus.kind }, 'broker listening');
  }

  /** Stops accepting, closes every socket with 1001, drains the bus. Safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (!this.started) return;
    clearInterval(this.pingTimer);
    clearInterval(this.sessionTimer);
    clearInterval(this.evictTimer);
    this.peers.stop();
    for (const t of this.graceTimers.values()) clearTimeout(t);
    this.graceTimers.clear();
    this.app.server.close();
    for (const gw of this.gateways.values()) gw.close(CloseCode.GoingAway, 'broker shutting down', false);
    for (const c of this.clients) c.close(CloseCode.GoingAway, 'broker shutting down');
    this.writes.stop();
    this.actions.stop(); // [gw-reports]
    this.exec.stop(); // [console]
    this.gatewayReports.stop(); // [gw-reports]
    for (const s of this.subs) s.unsubscribe();
    this.apiKeys.stop(); // [accounts]
    await this.bus.flush().catch(() => undefined);
    await this.audit.flush(); // [console]
    if (this.ownsBus) await this.bus.stop();
    await this.app.close();
    this.log.info('broker stopped');
  }

  // ---------------------------------------------------------------------------------------------
  // Connections

  private onConnection(socket: Socket): void {
    const address = socket.remoteAddress ?? 'unknown';
    if (!this.connections.acquire(address)) {
      // Refused at its request or upgrade with 429 (a reason the client can read); a silent one is closed by
      // the handshake timeout. It holds no slot, so it cannot keep others of its address out.
      this.overCap.add(socket);
      return;
    }
    socket.once('close', () => this.connections.release(address));
  }

  /** Counts a refused connection; logs the first and then every 1000th, so a flood does not flood the log. */
  refusedConnection(reason: string, remote: string | undefined): void {
    const c = this.counters.rejected(reason);
    c.inc();
    if (c.value % 1000 === 1) this.log.warn({ reason, remote, count: c.value }, 'connection refused');
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    if (this.overCap.has(req.socket)) {
      this.refusedConnection('too-many-connections', req.socket.remoteAddress);
      return refuseUpgrade(socket, 429, 'too many connections from this address');
    }
    const path = pathOf(req);
    const kind = path === '/gw' ? 'gateway' : path === '/ws' ? 'client' : undefined;
    if (kind === undefined) {
      this.counters.rejected('unknown-path').inc();
      return refuseUpgrade(socket, 404, `no WebSocket endpoint at ${path}`);
    }
    const { token } = extractToken(req.headers, req.url);
    let claims: TokenClaims;
    if (kind === 'client' && token === undefined && this.config.allowAnonymousViewers) {
      claims = { sub: 'anonymous', role: 'viewer' };
    } else {
      const result = await this.verify(token, kind === 'gateway' ? GATEWAY_ROLES : CLIENT_ROLES);
      if (!result.ok) {
        this.counters.rejected(`auth-${result.reason}`).inc();
        this.log.warn({ path, reason: result.reason, remote: req.socket.remoteAddress }, 'connection refused');
        return refuseUpgrade(socket, 401, `token ${result.reason}`);
      }
      claims = result.claims;
    }
    if (kind === 'gateway') {
      // The subject becomes the gateway id: a table key and a bus subject token (finding 12 of issue 10).
      const bad = isIdentifier(claims.sub);
      if (bad !== undefined) {
        this.refusedConnection('bad-gateway-id', req.socket.remoteAddress);
        return refuseUpgrade(socket, 400, `gateway id (token sub) ${bad}`);
      }
    }
    if (!this.started || this.stopping) return refuseUpgrade(socket, 503, 'broker shutting down');
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      if (kind === 'gateway') this.adoptGateway(ws, claims);
      else this.adoptClient(ws, claims);
    });
  }

  private adoptGateway(ws: WebSocket, claims: TokenClaims): void {
    const gatewayId = claims.sub;
    const previous = this.gateways.get(gatewayId);
    const session = new GatewaySession(this.gatewayDeps, ws, gatewayId, claims.org);
    this.gatewayClaims.set(session, claims);
    this.gateways.set(gatewayId, session);
    if (claims.org !== undefined)
      this.gatewayOrgs.set(gatewayId, claims.org); // [accounts]
    else this.gatewayOrgs.delete(gatewayId);
    if (previous) {
      // Writes in flight on the old connection complete through the new one (a gateway renewing its token
      // answers on the new link), and only the new one takes further writes.
      this.writes.handOver(previous, session);
      this.actions.handOver(previous, session); // [gw-reports]
      this.exec.handOver(previous, session); // [console]
      previous.close(CloseCode.Replaced, 'replaced by a newer connection', false);
    }
    // Tell peer brokers, which close their own connection for this gateway (it moved here).
    this.bus.publish(
      subjects.gatewayClaim(gatewayId),
      Buffer.from(JSON.stringify({ broker: this.id, gateway: gatewayId, org: claims.org })),
    );
    session.start();
    // Nodes the gateway owned before must be announced again by this session, or they are lost.
    if (this.table.ownedBy(gatewayId).length > 0) this.startGrace(gatewayId);
  }

  /** Called by a gateway session when its socket is gone. */
  private gatewayGone(session: GatewaySession): void {
    if (this.gateways.get(session.gatewayId) === session) this.gateways.delete(session.gatewayId);
  }

  private adoptClient(ws: WebSocket, claims: TokenClaims): void {
    const session = new ClientSession(this.clientDeps, ws, claims);
    this.clients.add(session);
    session.start();
  }

  register(client: ClientSession): void {
    this.registered.add(client);
    // [accounts] Grouped by org once here, so the fan-out writes an event to its org's clients only.
    const org = client.claims.org;
    if (org === undefined) this.wideClients.add(client);
    else {
      const group = this.orgClients.get(org);
      if (group === undefined) this.orgClients.set(org, new Set([client]));
      else group.add(client);
    }
  }

  clientGone(client: ClientSession): void {
    this.clients.delete(client);
    this.registered.delete(client);
    this.wideClients.delete(client); // [accounts]
    const org = client.claims.org;
    const group = org === undefined ? undefined : this.orgClients.get(org);
    if (group?.delete(client) && group.size === 0) this.orgClients.delete(org as string);
  }

  private heartbeat(): void {
    for (const gw of this.gateways.values()) gw.heartbeat();
    for (const c of this.clients) c.heartbeat();
  }

  /**
   * Finding 7 of issue 10: a session lives no longer than its token. Every --session-sweep-ms, a session whose
   * token expired or was revoked is closed with 4401; the gateway link renews its token before that.
   */
  private sweepSessions(): void {
    const now = Date.now();
    for (const gw of this.gateways.values()) {
      const claims = this.gatewayClaims.get(gw);
      const ended = claims === undefined ? undefined : this.tokenEnded(claims, now);
      if (ended !== undefined && gw.ws.readyState === 1) {
        this.counters.sessionsEnded(ended).inc();
        this.log.info({ gateway: gw.gatewayId, reason: ended }, 'gateway session closed: token ended');
        gw.close(CloseCode.TokenExpired, `token ${ended}`);
      } else gw.sweepKeys(); // [accounts]
    }
    for (const c of this.clients) c.checkToken(now);
  }

  /** Finding 4 of issue 10: nodes offline longer than --offline-retention-ms are forgotten. */
  private evictOffline(): void {
    const evicted = this.table.evictOffline(Date.now() - this.config.offlineRetentionMs);
    if (evicted > 0) {
      this.counters.evicted.inc(evicted);
      this.log.info({ nodes: evicted }, 'offline nodes evicted');
    }
  }

  /**
   * Whether a gateway may announce `uid` with `resources` resources: a node the table does not hold yet is
   * refused while it is full (--max-nodes), and no node may have more than --max-resources-per-node.
   */
  admitNode(uid: string, resources: number): NodeRefusal | undefined {
    if (resources > this.maxResourcesPerNode) return this.resourceRefusal(uid);
    if (this.table.get(uid) !== undefined || this.table.size < this.config.maxNodes) {
      this.nodeCapLogged = false;
      return undefined;
    }
    if (!this.nodeCapLogged) {
      this.nodeCapLogged = true;
      this.log.warn({ maxNodes: this.config.maxNodes, uid }, 'node table full: new nodes refused');
    }
    return {
      code: ErrorCode.LimitReached,
      counter: 'max-nodes',
      reason: `the broker holds its maximum of ${this.config.maxNodes} nodes`,
    };
  }

  /** Whether an update may store `endpoint` on `uid`: a new resource beyond the per-node cap is refused. */
  admitResource(uid: string, endpoint: string): NodeRefusal | undefined {
    const node = this.table.get(uid);
    if (node === undefined || Object.hasOwn(node.resources, endpoint)) return undefined;
    return NodeTable.resourceCount(node, this.maxResourcesPerNode) >= this.maxResourcesPerNode
      ? this.resourceRefusal(uid)
      : undefined;
  }

  private resourceRefusal(uid: string): NodeRefusal {
    this.log.debug({ uid, max: this.maxResourcesPerNode }, 'resource refused: node at its resource cap');
    return {
      code: ErrorCode.LimitReached,
      counter: 'max-resources-per-node',
      reason: `a node may have at most ${this.maxResourcesPerNode} resources`,
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Node events: published by the session that accepted them, applied and fanned out when they come back
  // off the bus. The same path serves one broker in-process and many brokers on NATS.

  /** `encoded`: the event's JSON when the caller already has it (a gateway frame that is the event verbatim). */
  publishEvent(event: NodeEvent, encoded?: string, receivedAt?: number, gateway?: string): void {
    // Never throws: parse points cap depth, so this only guards against a value that slipped past them.
    const text = encoded ?? stringifySafe(event);
    if (text === undefined) {
      this.counters.rejected('unserializable').inc();
      this.log.warn({ uid: event.uid, type: event.type }, 'node event cannot be serialized; dropped');
      return;
    }
    const { frame, payload } = textFrameOf(text);
    const org = this.eventOrg(event, gateway);
    this.localEvent = { bytes: payload, frame, event, receivedAt, org };
    // On NATS the event comes back later: remember when its frame arrived (the in-process bus answers at once).
    if (this.bus.kind !== 'memory') this.latency.published(payload, receivedAt);
    this.bus.publish(this.eventsSubjectOf(org), payload);
    this.localEvent = undefined;
  }

  /**
   * [accounts] A node event's organisation, which names its subject so NATS permissions can split them. The gateway
   * comes from the caller: on NATS a node's own `new` may not be back in the table when its first update goes out.
   */
  private eventOrg(event: NodeEvent, from?: string): string | undefined {
    const gateway = from ?? this.table.get(event.uid)?.gateway;
    return gateway === undefined ? undefined : this.orgOfNode(event.uid, gateway);
  }

  /** [accounts] This broker's events subject for an organisation (`myc.events.<org>.<broker>`), made once each. */
  private eventsSubjectOf(org: string | undefined): string {
    const key = org ?? '';
    let subject = this.eventSubjects.get(key);
    if (subject === undefined) {
      subject = subjects.events(this.id, org);
      this.eventSubjects.set(key, subject);
      this.ownEventSubjects.add(subject);
    }
    return subject;
  }

  private onBusEvent(msg: BusMsg): void {
    let event: NodeEvent;
    let frame: Buffer | undefined;
    let receivedAt: number | undefined;
    const local = this.localEvent !== undefined && msg.data === this.localEvent.bytes ? this.localEvent : undefined;
    if (local !== undefined) {
      event = local.event;
      frame = local.frame;
      receivedAt = local.receivedAt;
    } else {
      if (this.ownEventSubjects.has(msg.subject)) receivedAt = this.latency.returned(msg.data);
      const parsed = parseBrokerToClientFrame(
        Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.length).toString(),
      );
      if (!parsed.ok || !isNodeEvent(parsed.value)) {
        this.counters.rejected('bad-bus-event').inc();
        this.log.warn(
          { subject: msg.subject, reason: parsed.ok ? 'not a node event' : parsed.reason },
          'bad event on bus',
        );
        return;
      }
      event = parsed.value;
    }
    this.counters.events.inc();
    this.table.apply(event, Date.now());
    // [accounts] A local event's organisation was decided for its subject; a peer's comes from this broker's tables.
    let org = local !== undefined ? local.org : this.orgs.nodeOrg(event.uid);
    if (org === undefined && local === undefined) org = this.peerDeviceOrg(event.uid, msg.subject);
    this.orgTraffic.event(org);
    if (this.registered.size > 0) this.fanOut(frame ?? textFrame(msg.data), org);
    if (receivedAt !== undefined) this.latency.delivered(receivedAt);
  }

  /**
   * Writes one event to the registered clients that may see it: framed once, same bytes for all. [accounts] The
   * system-wide clients, then the clients of the event's org (none when it has none): no check per client.
   */
  private fanOut(frame: Buffer, org?: string): void {
    let sent = this.fanOutTo(this.wideClients, frame);
    const group = org === undefined ? undefined : this.orgClients.get(org);
    if (group !== undefined) {
      const toOrg = this.fanOutTo(group, frame);
      this.orgTraffic.delivered(org as string, toOrg); // [accounts] per-org /metrics
      sent += toOrg;
    }
    this.counters.delivered.inc(sent);
  }

  private fanOutTo(clients: Set<ClientSession>, frame: Buffer): number {
    const limit = this.config.clientBufferBytes;
    let sent = 0;
    for (const client of clients) {
      const socket = rawSocket(client.ws);
      if (socket === undefined || client.ws.readyState !== 1) continue;
      // A client still receiving its snapshot gets live frames after it, in order.
      if (!client.live) {
        client.queue(frame);
        continue;
      }
      if (socket.writableLength > limit) {
        // Bounded memory: a client that cannot keep up is dropped; it reconnects and gets a fresh snapshot.
        this.counters.rejected('slow-client').inc();
        client.close(1013, 'client too slow');
        continue;
      }
      this.writer.write(socket, frame);
      sent++;
    }
    return sent;
  }

  // ---------------------------------------------------------------------------------------------
  // Peer brokers

  private onGatewayClaim(msg: BusMsg): void {
    let claim: { broker?: unknown; gateway?: unknown };
    try {
      claim = JSON.parse(Buffer.from(msg.data).toString());
    } catch {
      return;
    }
    if (typeof claim.gateway !== 'string' || typeof claim.broker !== 'string' || claim.broker === this.id) return;
    // [accounts] The gateway's organisation travels with its claim (absent: system-wide).
    const org = (claim as { org?: unknown }).org;
    if (typeof org === 'string') this.gatewayOrgs.set(claim.gateway, org);
    else this.gatewayOrgs.delete(claim.gateway);
    this.peers.claimed(claim.broker, claim.gateway);
    // The gateway now lives on a peer broker: drop our stale connection and stop our grace timer; the
    // peer that adopted it checks that its nodes come back.
    this.cancelGrace(claim.gateway);
    const session = this.gateways.get(claim.gateway);
    if (session !== undefined) {
      this.log.info({ gateway: claim.gateway, to: claim.broker }, 'gateway moved to another broker');
      session.close(CloseCode.Replaced, 'gateway connected to another broker', false);
    }
  }

  /** Gateways whose nodes must be re-announced (or be declared lost) before a deadline. */
  private readonly graceTimers = new Map<string, NodeJS.Timeout>();

  /**
   * Starts the grace period of a gateway that dropped or reconnected: when it ends, each of its nodes that
   * the gateway's current session (if any) has not announced again goes `out` with reason gateway-lost.
   */
  startGrace(gatewayId: string): void {
    this.cancelGrace(gatewayId);
    const timer = setTimeout(() => {
      this.graceTimers.delete(gatewayId);
      if (this.peers.locate(gatewayId) !== undefined) return; // it lives on a peer broker now
      const current = this.gateways.get(gatewayId);
      let lost = 0;
      for (const node of this.table.ownedBy(gatewayId)) {
        if (node.status === 'online' && !current?.announced(node.uid)) {
          this.publishEvent({ type: 'out', uid: node.uid, reason: 'gateway-lost', lastSeen: node.lastSeen });
          lost++;
        }
      }
      if (lost > 0) this.log.info({ gateway: gatewayId, nodes: lost }, 'gateway lost: its nodes are out');
    }, this.config.gatewayGraceMs);
    timer.unref();
    this.graceTimers.set(gatewayId, timer);
  }

  cancelGrace(gatewayId: string): void {
    const t = this.graceTimers.get(gatewayId);
    if (t !== undefined) {
      clearTimeout(t);
      this.graceTimers.delete(gatewayId);
    }
  }

  private onStateSyncRequest(msg: BusMsg): void {
    if (!msg.reply) return;
    const nodes: NodeRecord[] = [];
    const gateways: GatewayRecord[] = [];
    for (const session of this.gateways.values()) {
      gateways.push(session.record());
      for (const uid of session.nodes) {
        const node = this.table.get(uid);
        if (node) nodes.push(node);
      }
    }
    const reply: StateSyncReply = { broker: this.id, nodes, gateways };
    const text = stringifySafe(reply);
    if (text === undefined) return this.log.warn('state-sync reply cannot be serialized; not sent');
    this.bus.publish(msg.reply, Buffer.from(text));
  }

  /** A broker that starts beside running peers asks them for the nodes they own. */
  private async syncStateFromPeers(): Promise<void> {
    if (this.bus.kind === 'memory' || this.config.stateSyncMs === 0) return;
    const replies = await this.bus.requestMany(subjects.stateSync, Buffer.from('{}'), this.config.stateSyncMs);
    let count = 0;
    for (const r of replies) {
      // A peer's reply is outside input too: the same depth cap as every frame.
      const json = parseJson(Buffer.from(r.data).toString());
      if (!json.ok || typeof json.value !== 'object' || json.value === null) continue;
      const body = json.value as StateSyncReply;
      if (body.broker === this.id) continue;
      this.peers.seed(body.broker, body.gateways ?? []);
      for (const node of body.nodes ?? []) if (this.table.adopt(node)) count++;
    }
    if (replies.length > 0) this.log.info({ peers: replies.length, nodes: count }, 'state synced from peer brokers');
  }

  /** Everything a client needs on `new`: every node and every gateway report (then the session adds `synced`). */
  /** [accounts] The org of the gateway a report frame is about (reports are rate-limited: one parse is cheap). */
  private reportOrg(text: string): string | undefined {
    const parsed = parseJson(text);
    const id = parsed.ok ? (parsed.value as { id?: unknown } | null)?.id : undefined;
    return typeof id === 'string' ? this.gatewayOrgs.get(id) : undefined;
  }

  /** [accounts] A node's organisation: its gateway's, or for a keyed device on an org-less gateway its key's. */
  private orgOfNode(uid: string, gateway: string): string | undefined {
    const org = this.gatewayOrgs.get(gateway);
    if (org !== undefined || this.keyedDeviceOrgs.size === 0) return org;
    return this.keyedDeviceOrgs.get(`${gateway}\n${uid}`);
  }

  /**
   * [accounts] A peer's event for a node of no organisation here: a keyed device on an org-less gateway of that
   * peer. Its subject names the key's organisation (the peer decided it); remembered like a device verified here.
   */
  private peerDeviceOrg(uid: string, subject: string): string | undefined {
    const org = eventsSubjectOrg(subject);
    const gateway = org === undefined ? undefined : this.table.get(uid)?.gateway;
    if (org === undefined || gateway === undefined || this.gatewayOrgs.has(gateway)) return undefined;
    this.noteDeviceOrg(gateway, uid, org);
    return org;
  }

  /** [accounts] GatewaySessionDeps.deviceOrg. */
  private noteDeviceOrg(gatewayId: string, uid: string, org: string): void {
    const key = `${gatewayId}\n${uid}`;
    this.keyedDeviceOrgs.delete(key); // re-inserted last: the bound drops the longest unseen first
    this.keyedDeviceOrgs.set(key, org);
    if (this.keyedDeviceOrgs.size > MAX_KEYED_DEVICE_ORGS) {
      this.keyedDeviceOrgs.delete(this.keyedDeviceOrgs.keys().next().value as string);
    }
  }

  snapshot(claims: Scoped = {}): BrokerToClientMessage[] {
    const frames: BrokerToClientMessage[] = [];
    for (const node of this.table.all()) {
      if (canSee(claims, this.orgOfNode(node.uid, node.gateway))) frames.push(...NodeTable.snapshotFrames(node));
    }
    for (const f of this.gatewayReports.frames()) {
      if (canSee(claims, this.gatewayOrgs.get(f.id))) frames.push(f); // [gw-reports] [accounts]
    }
    return frames;
  }

  get registeredClients(): number {
    return this.registered.size;
  }
}

function isNodeEvent(msg: { type: string }): msg is NodeEvent {
  return msg.type === 'new' || msg.type === 'update' || msg.type === 'out' || msg.type === 'reset';
}
