// REST routes of the history (docs/history.md). The broker holds no history: it asks the history service over the
// bus (`myc.history.query`, request/reply), page by page, so any worker of the service can answer each page and a
// CSV of a million rows streams through without sitting in memory. No history service: 503 with the reason.
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Bus, BusError } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import type { Logger } from '../common/log.ts';
import {
  CSV_HEADER,
  type CheckedRange,
  checkRange,
  checkSeries,
  checkSettings,
  csvRow,
  type ErrorReply,
  ErrorCodes,
  type EventsReply,
  type HistoryRequest,
  MAX_EVENTS,
  MAX_JSON_POINTS,
  type PointsReply,
  type RangeParams,
  type SettingsReply,
} from '../history/protocol.ts';
import { canWrite, type Json } from '../protocol/messages.ts';
import { parseJson } from '../protocol/schema.ts';
import { historySchemas } from './history-schemas.ts';
import type { BrokerCounters } from './ports.ts';

/** How long one page of an answer may take before the request fails with 503. */
export const HISTORY_TIMEOUT_MS = 10_000;
/** Points a JSON answer holds when `limit` is absent. */
export const DEFAULT_JSON_POINTS = 10_000;

export interface HistoryApiDeps {
  bus: Pick<Bus, 'request'>;
  log: Logger;
  counters: Pick<BrokerCounters, 'rejected'>;
  timeoutMs?: number;
}

/** A failure to hand to the client as it is: HTTP status, stable code, message. */
class HistoryProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Query = Record<string, string | string[] | undefined>;
type SeriesParams = { uid: string; name: string };

/** The one value of a query parameter; a repeated parameter is refused rather than guessed. */
function one(q: Query, name: string): string | undefined {
  const v = q[name];
  if (Array.isArray(v)) throw new HistoryProblem(400, ErrorCodes.BadRange, `${name} given more than once`);
  return v;
}

function rangeParams(q: Query): RangeParams {
  return { from: one(q, 'from'), to: one(q, 'to'), limit: one(q, 'limit'), step: one(q, 'step'), agg: one(q, 'agg') };
}

export function registerHistoryApi(api: FastifyInstance, deps: HistoryApiDeps): void {
  const timeoutMs = deps.timeoutMs ?? HISTORY_TIMEOUT_MS;

  /** One request to the history service; its refusal or absence becomes a HistoryProblem. */
  const ask = async <T>(request: HistoryRequest): Promise<T> => {
    let data: Uint8Array;
    try {
      data = (await deps.bus.request(subjects.historyQuery, Buffer.from(JSON.stringify(request)), timeoutMs)).data;
    } catch (err) {
      if (err instanceof BusError && err.code === 'no-responders') {
        throw new HistoryProblem(503, ErrorCodes.Unavailable, 'no history service is running');
      }
      if (err instanceof BusError && err.code === 'timeout') {
        throw new HistoryProblem(503, ErrorCodes.Unavailable, `the history service did not answer in ${timeoutMs} ms`);
      }
      throw new HistoryProblem(
        503,
        ErrorCodes.Unavailable,
        `the history service cannot be reached: ${(err as Error).message}`,
      );
    }
    const json = parseJson(Buffer.from(data.buffer, data.byteOffset, data.length).toString());
    if (!json.ok || typeof json.value !== 'object' || json.value === null) {
      throw new HistoryProblem(503, ErrorCodes.Unavailable, 'bad answer from the history service');
    }
    const body = json.value as unknown as Partial<ErrorReply>;
    if (typeof body.error === 'string') {
      const status = typeof body.status === 'number' && body.status >= 400 && body.status < 600 ? body.status : 503;
      throw new HistoryProblem(status, body.error, String(body.message));
    }
    return json.value as T;
  };

  /** Every page of a points query, in order, until `limit` points or the end of the range. */
  async function* pages(uid: string, resource: string, r: CheckedRange): AsyncGenerator<PointsReply> {
    let remaining = r.limit;
    let from = r.from;
    let skip = 0;
    for (;;) {
      const page = await ask<PointsReply>({
        op: 'points',
        uid,
        resource,
        from,
        to: r.to,
        limit: remaining,
        ...(r.step === undefined ? {} : { step: r.step }),
        ...(r.agg === undefined ? {} : { agg: r.agg }),
        skip,
      });
      yield page;
      remaining -= page.points.length;
      if (page.next === undefined || remaining <= 0 || page.points.length === 0) return;
      ({ from, skip } = page.next);
    }
  }

  const fail = (reply: FastifyReply, err: unknown, what: string) => {
    if (err instanceof HistoryProblem) {
      deps.counters.rejected(`history-${err.status}`).inc();
      if (err.status >= 500) deps.log.warn({ reason: err.message }, `${what}: history unavailable`);
      return reply.code(err.status).send({ error: err.code, message: err.message });
    }
    deps.log.error({ err }, `${what} failed`);
    return reply.code(500).send({ error: 'MYC_ERR_HTTP', message: 'internal error' });
  };

  const checkedSeries = (uid: string, name?: string) => {
    const bad = checkSeries(uid, name);
    if (bad !== undefined) throw new HistoryProblem(400, ErrorCodes.BadShape, bad);
  };

  const wantsCsv = (req: FastifyRequest, q: Query) => {
    const format = one(q, 'format');
    if (format !== undefined && format !== 'csv' && format !== 'json') {
      throw new HistoryProblem(400, ErrorCodes.BadShape, 'format must be csv or json');
    }
    return format === 'csv' || (format === undefined && (req.headers.accept ?? '').includes('text/csv'));
  };

  api.get<{ Params: SeriesParams; Querystring: Query }>(
    '/nodes/:uid/resources/:name/history',
    { schema: historySchemas.history },
    async (req, reply) => {
      const { uid, name } = req.params;
      try {
        checkedSeries(uid, name);
        const csv = wantsCsv(req, req.query);
        const checked = csv
          ? checkRange(rangeParams(req.query), Date.now(), Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)
          : checkRange(rangeParams(req.query), Date.now(), MAX_JSON_POINTS, DEFAULT_JSON_POINTS);
        if (!checked.ok) throw new HistoryProblem(400, ErrorCodes.BadRange, checked.message);
        const r = checked.value;
        const it = pages(uid, name, r);
        // The first page before any byte is sent: an error or a missing service still gets its status.
        const first = await it.next();
        if (csv) return sendCsv(reply, uid, name, first.value, it);
        const head = first.value as PointsReply;
        const points: [number, Json][] = head.points;
        for await (const page of it) for (const p of page.points) points.push(p);
        return {
          uid,
          resource: name,
          from: r.from,
          to: r.to,
          ...(r.step === undefined ? {} : { step: r.step, agg: r.agg ?? 'avg' }),
          ...(head.units === undefined ? {} : { units: head.units }),
          ...(head.decimals === undefined ? {} : { decimals: head.decimals }),
          points,
        };
      } catch (err) {
        return fail(reply, err, 'history query');
      }
    },
  );

  const sendCsv = (
    reply: FastifyReply,
    uid: string,
    resource: string,
    first: PointsReply | undefined,
    rest: AsyncGenerator<PointsReply>,
  ) => {
    const log = deps.log;
    async function* rows(): AsyncGenerator<string> {
      yield CSV_HEADER;
      if (first !== undefined) yield first.points.map(([at, v]) => csvRow(at, v)).join('');
      try {
        for await (const page of rest) yield page.points.map(([at, v]) => csvRow(at, v)).join('');
      } catch (err) {
        // Headers are gone: the only way left to say "incomplete" is to cut the response short.
        log.warn({ err, uid, resource }, 'CSV export cut short: history unavailable');
        throw err;
      }
    }
    const file = `${uid}-${resource}`.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 100);
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="${file}.csv"`)
      .send(Readable.from(rows()));
  };

  api.get<{ Params: { uid: string }; Querystring: Query }>(
    '/nodes/:uid/events',
    { schema: historySchemas.events },
    async (req, reply) => {
      const { uid } = req.params;
      try {
        checkedSeries(uid);
        const checked = checkRange(rangeParams(req.query), Date.now(), MAX_EVENTS, 1_000);
        if (!checked.ok) throw new HistoryProblem(400, ErrorCodes.BadRange, checked.message);
        if (checked.value.step !== undefined || checked.value.agg !== undefined) {
          throw new HistoryProblem(400, ErrorCodes.BadRange, 'events take no step or agg');
        }
        const { from, to, limit } = checked.value;
        const body = await ask<EventsReply>({ op: 'events', uid, from, to, limit });
        return { uid, from, to, events: body.events };
      } catch (err) {
        return fail(reply, err, 'events query');
      }
    },
  );

  api.get<{ Params: SeriesParams }>(
    '/nodes/:uid/resources/:name/settings',
    { schema: historySchemas.getSettings },
    async (req, reply) => {
      const { uid, name } = req.params;
      try {
        checkedSeries(uid, name);
        const body = await ask<SettingsReply>({ op: 'get-settings', uid, resource: name });
        return { uid, resource: name, settings: body.settings };
      } catch (err) {
        return fail(reply, err, 'settings query');
      }
    },
  );

  api.put<{ Params: SeriesParams; Body: unknown }>(
    '/nodes/:uid/resources/:name/settings',
    { schema: historySchemas.putSettings },
    async (req, reply) => {
      const { uid, name } = req.params;
      try {
        if (!canWrite(req.claims!.role)) {
          throw new HistoryProblem(403, 'MYC_ERR_FORBIDDEN', `role ${req.claims!.role} may not change settings`);
        }
        checkedSeries(uid, name);
        const checked = checkSettings(req.body);
        if (!checked.ok) throw new HistoryProblem(400, ErrorCodes.BadShape, checked.message);
        const body = await ask<SettingsReply>({ op: 'put-settings', uid, resource: name, settings: checked.value });
        return { uid, resource: name, settings: body.settings };
      } catch (err) {
        return fail(reply, err, 'settings change');
      }
    },
  );
}
