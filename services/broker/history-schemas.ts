// OpenAPI descriptions of the history routes (history-api.ts). Parameters are declared as plain strings on
// purpose: their rules (identifiers, times as ISO 8601 or epoch ms, ranges, steps) are checked by the history's
// own range checks (services/history/protocol.ts), which name the reason; a schema here would answer first with a
// vaguer message. Answers carry no response schema: JSON pages and streamed CSV are written as they are.
import { Type } from '@sinclair/typebox';
import type { FastifySchema } from 'fastify';
import { AUTH_ERRORS, errors } from './rest-schemas.ts';

const NodeParams = Type.Object({ uid: Type.String({ description: 'node uid' }) });
const SeriesParams = Type.Object({
  uid: Type.String({ description: 'node uid' }),
  name: Type.String({ description: 'resource name' }),
});
const time = (what: string) => Type.Optional(Type.String({ description: `${what}: ISO 8601 or epoch milliseconds` }));
const RangeQuery = Type.Object({
  from: time('start, inclusive (default: an hour before `to`)'),
  to: time('end, exclusive (default: now)'),
  limit: Type.Optional(Type.String({ description: 'most points (JSON); CSV streams every point' })),
});
const BAD_INPUT = 'a bad uid or name, a bad time, from ≥ to, a range, limit, step or agg out of bounds';
const NO_SERVICE = 'no history service answers, or its store is unavailable (the reason is given)';

export const historySchemas = {
  history: {
    summary: "A resource's stored values, raw or one point per step",
    description:
      'JSON `{uid, resource, from, to, points: [[atMs, value], …]}`; CSV (a header row, ISO times) with `Accept: text/csv` or `format=csv`. See docs/history.md.',
    tags: ['history'],
    params: SeriesParams,
    querystring: Type.Object({
      ...RangeQuery.properties,
      step: Type.Optional(Type.String({ description: 'bucket width in ms: one point per bucket' })),
      agg: Type.Optional(Type.String({ description: 'avg | min | max | last | count (default avg)' })),
      format: Type.Optional(Type.String({ description: '`csv` for CSV' })),
    }),
    produces: ['application/json', 'text/csv'],
    response: errors({ ...AUTH_ERRORS, 400: BAD_INPUT, 503: NO_SERVICE }),
  },
  events: {
    summary: "A node's presence (new, out with its reason, reset) and write history",
    tags: ['history'],
    params: NodeParams,
    querystring: RangeQuery,
    response: errors({ ...AUTH_ERRORS, 400: BAD_INPUT, 503: NO_SERVICE }),
  },
  getSettings: {
    summary: "A resource's history settings (maxHistory, retentionMs, minIntervalMs, units, decimals)",
    tags: ['history'],
    params: SeriesParams,
    response: errors({ ...AUTH_ERRORS, 400: BAD_INPUT, 503: NO_SERVICE }),
  },
  putSettings: {
    summary: "Change a resource's history settings (operator, admin)",
    tags: ['history'],
    params: SeriesParams,
    response: errors({
      ...AUTH_ERRORS,
      400: BAD_INPUT,
      403: 'the role may not change settings (viewer)',
      503: NO_SERVICE,
    }),
  },
} satisfies Record<string, FastifySchema & { summary: string; tags: string[] }>;
