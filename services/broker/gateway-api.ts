// REST for gateways (issue 11, item 7): the list with each gateway's last status, one gateway with
// its inventory, status and a short history of counts, and actions. Registered inside the authenticated /api/v1
// scope of http-api.ts: GET needs a viewer token, POST an operator (or admin) one.
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from '../common/log.ts';
import { ErrorCode } from '../protocol/errors.ts';
import type { ActionArgs, ActionName } from '../protocol/gateway-reports.ts';
import { canWrite, type GatewayRecord } from '../protocol/messages.ts';
import { type ActionOutcome, type ActionRouter, actionRequestProblem } from './gateway-actions.ts';
import type { GatewayReports } from './gateway-reports.ts';
import type { PeerDirectory } from './peers.ts';
import type { BrokerCounters, GatewayView } from './ports.ts';
import { routeSchemas } from './rest-schemas.ts';

export interface GatewayApiDeps {
  log: Logger;
  counters: Pick<BrokerCounters, 'rejected'>;
  /** The gateways connected to this broker; peers' come from `peers`. */
  gateways: ReadonlyMap<string, GatewayView>;
  peers: Pick<PeerDirectory, 'remoteGateways'>;
  reports: Pick<GatewayReports, 'get'>;
  actions: Pick<ActionRouter, 'request'>;
}

/**
 * HTTP status of each outcome. The body's args are checked by the same rule the gateway applies
 * (actionArgsProblem: ACTION_ARGS compiled), after the role check, and an unknown action name is its own code
 * (MYC_ERR_UNKNOWN_ACTION): so the body is not a route schema.
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

  api.get('/gateways', { schema: routeSchemas.listGateways }, async () =>
    [...known().values()].map((g) => {
      const status = deps.reports.get(g.id)?.status;
      return status === undefined ? g : { ...g, status };
    }),
  );

  api.get<{ Params: { id: string } }>('/gateways/:id', { schema: routeSchemas.getGateway }, async (req, reply) => {
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
  });

  api.post<{ Params: { id: string; name: string }; Body: unknown }>(
    '/gateways/:id/actions/:name',
    { schema: routeSchemas.gatewayAction },
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
