// [gw-reports] REST for gateways (issue 11, item 7): the list with each gateway's last status, one gateway with
// its inventory, status and a short history of counts, and actions. Registered inside the authenticated /api/v1
// scope of http-api.ts: GET needs a viewer token, POST an operator (or admin) one.
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from '../common/log.ts';
import { ErrorCode } from '../protocol/errors.ts';
import type { ActionArgs, ActionName } from '../protocol/gateway-reports.ts';
import { canWrite, type GatewayRecord } from '../protocol/messages.ts';
import { MAX_ID_LENGTH } from '../protocol/schema.ts';
import { type ActionOutcome, type ActionRouter, actionRequestProblem } from './gateway-actions.ts';
import type { GatewayReports } from './gateway-reports.ts';
import type { PeerDirectory } from './peers.ts';
import type { BrokerCounters, GatewayView } from './ports.ts';

export interface GatewayApiDeps {
  log: Logger;
  counters: Pick<BrokerCounters, 'rejected'>;
  /** The gateways connected to this broker; peers' come from `peers`. */
  gateways: ReadonlyMap<string, GatewayView>;
  peers: Pick<PeerDirectory, 'remoteGateways'>;
  reports: Pick<GatewayReports, 'get'>;
  actions: Pick<ActionRouter, 'request'>;
}

const GatewayParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: MAX_ID_LENGTH }) });
const ActionParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: MAX_ID_LENGTH }),
  name: Type.String({ minLength: 1, maxLength: 64 }),
});

const Counts = Type.Record(Type.String(), Type.Number());
const InventorySchema = Type.Object({
  protocol: Type.String(),
  version: Type.String(),
  startedAt: Type.Number(),
  actions: Type.Array(Type.String()),
  listen: Type.Array(Type.String()),
});
const StatusSchema = Type.Object({
  at: Type.Number(),
  uptimeS: Type.Number(),
  nodes: Counts,
  messages: Type.Object({ in: Type.Number(), out: Type.Number() }),
  errors: Counts,
  reconnects: Type.Number(),
  eventLoopLagMs: Type.Number(),
});
/**
 * The answer of GET /gateways/:id. As a response schema it also means only these fields are ever serialized,
 * whatever a report held (defence in depth: the broker already copies only the known fields).
 */
const GatewayDetail = Type.Object({
  id: Type.String(),
  broker: Type.Optional(Type.String()),
  connectedAt: Type.Optional(Type.Number()),
  nodes: Type.Optional(Type.Number()),
  inventory: Type.Union([InventorySchema, Type.Null()]),
  status: Type.Union([StatusSchema, Type.Null()]),
  history: Type.Array(Type.Object({ at: Type.Number(), in: Type.Number(), out: Type.Number(), errors: Type.Number() })),
});
const ActionAnswer = Type.Object({
  id: Type.String(),
  result: Type.String(),
  reason: Type.Optional(Type.String()),
  detail: Type.Optional(Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean()]))),
});

/**
 * HTTP status of each outcome. The body's args are checked by the same rule the gateway applies
 * (actionArgsProblem), not by the route schema: Fastify's validator coerces types and strips unknown keys,
 * and a hostile `{"uid": 7, "x": 1}` must be refused, not quietly repaired.
 */
const STATUS_OF: Record<ActionOutcome['result'], number> = {
  ok: 200,
  error: 502,
  'unknown-action': 400,
  'bad-args': 400,
  timeout: 504,
  unreachable: 503,
};

function problem(reply: FastifyReply, status: number, code: string, message: string) {
  return reply.code(status).send({ error: code, message });
}

export function registerGatewayRoutes(api: FastifyInstance, deps: GatewayApiDeps): void {
  /** Every gateway this broker knows of, connected here or on a peer. */
  const known = (): Map<string, GatewayRecord> => {
    const list = new Map<string, GatewayRecord>();
    for (const g of deps.peers.remoteGateways()) list.set(g.id, g);
    for (const s of deps.gateways.values()) list.set(s.gatewayId, s.record());
    return list;
  };

  api.get('/gateways', async () =>
    [...known().values()].map((g) => {
      const status = deps.reports.get(g.id)?.status;
      return status === undefined ? g : { ...g, status };
    }),
  );

  api.get<{ Params: { id: string } }>(
    '/gateways/:id',
    { schema: { params: GatewayParams, response: { 200: GatewayDetail } } },
    async (req, reply) => {
      const { id } = req.params;
      const record = known().get(id);
      const report = deps.reports.get(id);
      if (record === undefined && report === undefined) {
        return problem(reply, 404, ErrorCode.UnknownGateway, `no gateway ${id}`);
      }
      return {
        id,
        broker: report?.broker ?? record?.broker,
        connectedAt: report?.connectedAt ?? record?.connectedAt,
        nodes: record?.nodes,
        inventory: report?.inventory ?? null,
        status: report?.status ?? null,
        history: report?.history ?? [],
      };
    },
  );

  api.post<{ Params: { id: string; name: string }; Body: unknown }>(
    '/gateways/:id/actions/:name',
    { schema: { params: ActionParams, response: { 200: ActionAnswer } } },
    async (req, reply) => {
      const { id, name } = req.params;
      const claims = req.claims!;
      if (!canWrite(claims.role)) {
        deps.counters.rejected('forbidden-action').inc();
        return problem(reply, 403, ErrorCode.Forbidden, `role ${claims.role} may not act on gateways`);
      }
      // No body (or an empty one) is no arguments: `rediscover` of every node.
      const args = req.body === undefined || req.body === '' ? undefined : req.body;
      const refused = actionRequestProblem(name, args);
      if (refused !== undefined) {
        deps.counters.rejected('bad-action').inc();
        return problem(reply, 400, refused.code, refused.message);
      }
      if (!known().has(id) && deps.reports.get(id) === undefined) {
        return problem(reply, 404, ErrorCode.UnknownGateway, `no gateway ${id}`);
      }
      deps.log.info({ gateway: id, action: name, args, by: claims.sub }, 'gateway action requested');
      const outcome = await deps.actions.request(id, name as ActionName, (args ?? {}) as ActionArgs);
      return reply.code(STATUS_OF[outcome.result]).send({ id, ...outcome });
    },
  );
}
