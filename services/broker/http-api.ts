// REST API under /api/v1, plus /healthz and /metrics. Every route but /healthz needs a bearer token.
// Every route declares its schemas (rest-schemas.ts): requests are checked by them, responses serialized by
// them, and @fastify/swagger publishes them as OpenAPI at /api/v1/openapi.json.
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Bus } from '../bus/bus.ts';
import type { Logger } from '../common/log.ts';
import type { VerifyResult } from '../common/tokens.ts';
import { ErrorCode } from '../protocol/errors.ts';
import { canWrite, type Json, type Role } from '../protocol/messages.ts';
import { parseJson } from '../protocol/schema.ts';
import type { Metrics } from '../common/metrics.ts';
import { registerCors } from './cors.ts';
import { registerHistoryApi } from './history-api.ts';
import { registerAccountsApi } from './accounts-api.ts';
import { authenticateHook } from './auth-hook.ts';
import { hiddenParam, type OrgDirectory, scopeList } from './scope.ts';
import { type OrgMetricsSource, renderOrgMetrics } from './org-metrics.ts';
import type { NodeRecord } from '../protocol/messages.ts';
import { type OwnershipRegistry, removeNode } from './ownership.ts';
import type { PeerDirectory } from './peers.ts';
import type { BrokerCounters, EventPublisher, GatewayView, NodeReader } from './ports.ts';
import { lazySerializer, routeSchemas, typeBoxValidator } from './rest-schemas.ts';
import type { WriteRouter } from './writes.ts';
import type { ActionRouter } from './gateway-actions.ts';
import { registerGatewayRoutes } from './gateway-api.ts';
import { registerRulesApi } from './rules-api.ts';
// [console] POST /nodes/:uid/exec, POST /exec, GET /audit (issue 12)
import type { AuditLog } from '../console/audit.ts';
import { registerExecRoutes } from './exec-api.ts';
import type { ExecRouter } from './exec-router.ts';
import type { GatewayReports } from './gateway-reports.ts';

/** The version the OpenAPI document gives: the REST API's, not the package's. */
export const REST_API_VERSION = '1.0.0';

/** What the REST API is given: it reads the broker's state and sends writes and removals, nothing more. */
export interface HttpApiDeps {
  brokerId: string;
  log: Logger;
  counters: Pick<BrokerCounters, 'rejected'>;
  metrics: Pick<Metrics, 'scrape'>;
  /** `request`: history queries go to the history service over the bus. */
  bus: Pick<Bus, 'kind' | 'request'>;
  table: NodeReader & { all(): IterableIterator<NodeRecord> };
  /** The gateways connected to this broker; peers' come from `peers`. */
  gateways: ReadonlyMap<string, GatewayView>;
  peers: Pick<PeerDirectory, 'remoteGateways'>;
  writes: Pick<WriteRouter, 'write'>;
  /** DELETE /nodes/:uid publishes the removal and releases the uid. */
  ownership: OwnershipRegistry;
  events: EventPublisher;
  auth: HttpAuth;
  config: { readonly allowAnonymousViewers: boolean; readonly publicMetrics: boolean };
  /** [gw-reports] Gateway reports and actions (gateway-api.ts). */
  reports: Pick<GatewayReports, 'get'>;
  actions: Pick<ActionRouter, 'request'>;
  /** [console] Console requests (exec-api.ts) and the audit log behind GET /audit. */
  exec?: Pick<ExecRouter, 'request'>;
  audit?: Pick<AuditLog, 'tail'>;
  /**
   * The OpenAPI document, made on the first GET /api/v1/openapi.json (openapi.ts): @fastify/swagger and what it
   * loads stay out of the broker's start-up.
   */
  openApiDocument(): Promise<Record<string, unknown>>;
  /** [accounts] Which org owns a node or gateway: org-scoped callers see only their own (scope.ts). */
  orgs?: OrgDirectory;
  /** [accounts] An org token's GET /metrics: its organisation's series (absent: 403 for org tokens). */
  orgMetrics?: OrgMetricsSource;
}

/** Token checks and the per-address connection cap, shared with the WebSocket upgrade. */
export interface HttpAuth {
  verify(token: string | undefined, roles: readonly Role[]): Promise<VerifyResult>;
  /** True when this request's connection is beyond its address's cap (answered 429). */
  overConnectionCap(socket: object): boolean;
  refusedConnection(reason: string, remote: string | undefined): void;
}

function problem(reply: FastifyReply, status: number, code: string, message: string) {
  return reply.code(status).send({ error: code, message });
}

export function registerHttpApi(app: FastifyInstance, deps: HttpApiDeps): void {
  app.setValidatorCompiler(typeBoxValidator);
  app.setSerializerCompiler(lazySerializer);
  // Devices and scripts may send a plain-text payload.
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, (_req, body, done) => done(null, body));
  // JSON bodies go through the same depth-capped parse as every frame (finding 1 of issue 10): a body nested
  // too deep is a 400 MYC_ERR_TOO_DEEP, never a value that crashes a later JSON.stringify. Fastify's bodyLimit
  // (--max-frame-bytes) answers a body too large with 413 before this runs.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const json = parseJson(body as string);
    if (json.ok) return done(null, json.value);
    done(Object.assign(new Error(json.reason), { statusCode: 400, code: json.code }), undefined);
  });

  // A connection beyond its address's cap (--max-connections-per-address) gets a 429 and is closed.
  app.addHook('onRequest', async (req, reply) => {
    if (!deps.auth.overConnectionCap(req.raw.socket)) return;
    deps.auth.refusedConnection('too-many-connections', req.raw.socket.remoteAddress);
    return problem(
      reply.header('connection', 'close'),
      429,
      ErrorCode.LimitReached,
      'too many connections from this address',
    );
  });

  // Fastify's own errors (bad JSON body, body too large, ...) are the client's mistake: a 4xx, never a 500.
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) deps.log.error({ err }, 'request failed');
    deps.counters.rejected(`http-${status}`).inc();
    return problem(reply, status, err.code ?? 'MYC_ERR_HTTP', err.message);
  });

  const authenticate = authenticateHook(deps, { anonymousViewers: () => deps.config.allowAnonymousViewers });

  registerCors(app);

  app.register(async (ops) => {
    ops.get('/healthz', { schema: routeSchemas.health }, async () => ({
      status: 'ok' as const,
      broker: deps.brokerId,
      bus: deps.bus.kind,
      gateways: deps.gateways.size,
      nodes: deps.table.size,
    }));

    ops.get(
      '/metrics',
      { schema: routeSchemas.metrics, onRequest: deps.config.publicMetrics ? [] : [authenticate] },
      async (req, reply) => {
        // [accounts] The broker's own series count every organisation together: an organisation token gets its
        // organisation's series only (org-metrics.ts), a system-wide caller everything.
        const org = req.claims?.org;
        const source = deps.orgMetrics;
        if (org !== undefined && source === undefined) {
          deps.counters.rejected('other-org').inc();
          return problem(reply, 403, ErrorCode.Forbidden, 'metrics are system-wide: not for an organisation token');
        }
        const text =
          org !== undefined && source !== undefined
            ? renderOrgMetrics(source, org)
            : (await deps.metrics.scrape()) + (source === undefined ? '' : renderOrgMetrics(source));
        return reply.type('text/plain; version=0.0.4').send(text);
      },
    );
  });

  app.register(
    async (api) => {
      api.addHook('onRequest', authenticate);
      // [accounts] Organisation scoping of every route below: another org's node or gateway is a 404, lists are cut.
      const orgs = deps.orgs;
      if (orgs !== undefined) {
        api.addHook('preHandler', async (req, reply) => {
          const hidden = hiddenParam(req, orgs);
          if (hidden === undefined) return;
          deps.counters.rejected('other-org').inc();
          if (hidden.code === 'uid') return problem(reply, 404, ErrorCode.UnknownNode, `no node ${hidden.id}`);
          return problem(reply, 404, ErrorCode.UnknownGateway, `no gateway ${hidden.id}`);
        });
        api.addHook('preSerialization', async (req, _reply, payload) => scopeList(req, orgs, payload));
      }

      api.get('/nodes', { schema: routeSchemas.listNodes }, async () => [...deps.table.all()]);

      api.get<{ Params: { uid: string } }>('/nodes/:uid', { schema: routeSchemas.getNode }, async (req, reply) => {
        const node = deps.table.get(req.params.uid);
        if (node === undefined) return problem(reply, 404, ErrorCode.UnknownNode, `no node ${req.params.uid}`);
        return node;
      });

      // Releases a uid (docs/architecture.md, "Node ownership"): the only way a node that never proved its uid
      // with a token moves to another gateway. Roles that may write may remove.
      api.delete<{ Params: { uid: string } }>(
        '/nodes/:uid',
        { schema: routeSchemas.removeNode },
        async (req, reply) => {
          const { uid } = req.params;
          if (!canWrite(req.claims!.role)) {
            deps.counters.rejected('forbidden-remove').inc();
            return problem(reply, 403, ErrorCode.Forbidden, `role ${req.claims!.role} may not remove nodes`);
          }
          let removed: boolean;
          try {
            removed = await removeNode(deps, uid, req.claims!.sub);
          } catch (err) {
            deps.counters.rejected('ownership-unavailable').inc();
            deps.log.error({ err, uid }, 'node removal failed: ownership store unavailable');
            return problem(reply, 503, ErrorCode.Unavailable, 'the node ownership store did not answer; retry');
          }
          if (!removed) return problem(reply, 404, ErrorCode.UnknownNode, `no node ${uid}`);
          return { uid, removed: true };
        },
      );

      api.put<{ Params: { uid: string; name: string }; Body: unknown }>(
        '/nodes/:uid/resources/:name',
        { schema: routeSchemas.writeResource },
        async (req, reply) => {
          const { uid, name } = req.params;
          if (!canWrite(req.claims!.role)) {
            deps.counters.rejected('forbidden-write').inc();
            return problem(reply, 403, ErrorCode.Forbidden, `role ${req.claims!.role} may not write`);
          }
          // The schema held uid and name to the identifier rule; the payload is any JSON value, but present.
          if (req.body === undefined || req.body === null || req.body === '') {
            return problem(reply, 400, ErrorCode.BadShape, 'the request body is the payload and must not be empty');
          }
          const node = deps.table.get(uid);
          if (node === undefined) return problem(reply, 404, ErrorCode.UnknownNode, `no node ${uid}`);
          if (node.status === 'offline') return problem(reply, 409, ErrorCode.NodeOffline, `node ${uid} is offline`);
          const outcome = await deps.writes.write(
            node.gateway,
            { uid, endpoint: name, payload: req.body as Json },
            req.claims!.sub,
          );
          const status = outcome.result === 'timeout' ? 504 : outcome.result === 'error' ? 502 : 200;
          return reply.code(status).send({ uid, endpoint: name, ...outcome });
        },
      );

      registerHistoryApi(api, { bus: deps.bus, log: deps.log, counters: deps.counters });
      registerGatewayRoutes(api, deps); // GET /gateways, GET /gateways/:id, POST …/actions/:name
      registerRulesApi(api, { bus: deps.bus, log: deps.log, counters: deps.counters }); // [rules] GET/POST/PUT /rules…
      registerExecRoutes(api, deps); // [console] POST /nodes/:uid/exec, POST /exec, GET /audit

      // Behind the token like the rest of /api/v1 (secure by default): it reveals no data, but the same document
      // is in docs/api.md for anyone without one.
      let openApiText: Promise<string> | undefined;
      api.get('/openapi.json', { schema: routeSchemas.openapi }, async (_req, reply) => {
        openApiText ??= deps.openApiDocument().then((doc) => JSON.stringify(doc));
        // A failed first build is tried again by the next request.
        openApiText.catch(() => {
          openApiText = undefined;
        });
        return reply.type('application/json; charset=utf-8').send(await openApiText);
      });
    },
    { prefix: '/api/v1' },
  );

  // [accounts] login, refresh, logout, API keys, PINs: some anonymous, so outside the authenticated plugin.
  registerAccountsApi(app, { bus: deps.bus, log: deps.log, counters: deps.counters, auth: deps.auth });
}
