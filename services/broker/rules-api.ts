// REST routes of the rules service (docs/rules.md): the broker runs no rule; it asks the rules service over the
// bus (`myc.rules.api`, request/reply, queue group `rules-api`), as history-api.ts asks the history service.
// Several rules workers (scale-out) each run every rule for their share of the nodes, so GET asks one of them,
// then every other live worker it names, on their own subjects, and merges the answers (rules/merge.ts); a worker
// that does not answer within RULES_GATHER_MS is named in `workers.missing`, not waited for.
// No rules service: 503. Reading needs a viewer token; enabling, disabling and reading or saving a rule's source
// are for admins only, because a rule is code the service runs (docs/rules.md, "Isolation").
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifySchema } from 'fastify';
import { type Bus, BusError } from '../bus/bus.ts';
import type { Logger } from '../common/log.ts';
import { ErrorCode } from '../protocol/errors.ts';
import { parseJson } from '../protocol/schema.ts';
import { mergeRules } from '../rules/merge.ts';
import {
  MAX_SOURCE_BYTES,
  RuleName,
  RuleRecord,
  type RulesApiError,
  type RulesApiRequest,
  rulesSubjects,
  type WorkerRuleRecord,
} from '../rules/protocol.ts';
import type { BrokerCounters } from './ports.ts';
import { AUTH_ERRORS, errors } from './rest-schemas.ts';

/** How long the rules service has to answer (a saved source is compiled and loaded before the answer). */
export const RULES_TIMEOUT_MS = 15_000;
/** How long GET waits for the other rules workers' counts (a live worker answers from memory, in ms). */
export const RULES_GATHER_MS = 1000;
/** Most rules workers asked for one GET: a bound on the fan-out whatever a worker reports. */
const MAX_WORKERS = 64;

export interface RulesApiDeps {
  bus: Pick<Bus, 'request'>;
  log: Logger;
  counters: Pick<BrokerCounters, 'rejected'>;
  timeoutMs?: number;
  gatherMs?: number;
}

const NameParams = Type.Object({ name: RuleName });
const NO_SERVICE = 'no rules service answers';
const ADMIN = '403: the role is not admin';
const Source = Type.Object({ name: Type.String(), source: Type.String() }, { title: 'RuleSource' });

export const rulesSchemas = {
  list: {
    summary: 'Every rule with its status, counts, last run and last error',
    tags: ['rules'],
    response: {
      200: Type.Array(RuleRecord, { description: 'every rule' }),
      ...errors({ ...AUTH_ERRORS, 503: NO_SERVICE }),
    },
  },
  get: {
    summary: 'One rule',
    tags: ['rules'],
    params: NameParams,
    response: {
      200: { ...RuleRecord, description: 'the rule' },
      ...errors({ ...AUTH_ERRORS, 400: 'a bad name', 404: 'no rule of this name', 503: NO_SERVICE }),
    },
  },
  enable: {
    summary: 'Enable a rule (admin): a disabled rule (by an admin or after failures) runs again',
    tags: ['rules'],
    params: NameParams,
    response: {
      200: { ...RuleRecord, description: 'the rule, reloaded' },
      ...errors({ ...AUTH_ERRORS, 400: 'a bad name', 403: ADMIN, 404: 'no rule of this name', 503: NO_SERVICE }),
    },
  },
  disable: {
    summary: 'Disable a rule (admin), on every rules worker and across restarts',
    tags: ['rules'],
    params: NameParams,
    response: {
      200: { ...RuleRecord, description: 'the rule' },
      ...errors({ ...AUTH_ERRORS, 400: 'a bad name', 403: ADMIN, 404: 'no rule of this name', 503: NO_SERVICE }),
    },
  },
  getSource: {
    summary: "A rule's source file (admin)",
    tags: ['rules'],
    params: NameParams,
    response: {
      200: { ...Source, description: 'the file as it is in the rules folder' },
      ...errors({ ...AUTH_ERRORS, 400: 'a bad name', 403: ADMIN, 404: 'no rule of this name', 503: NO_SERVICE }),
    },
  },
  putSource: {
    summary: "Create or replace a rule's source (admin): checked, saved to the rules folder and applied",
    description:
      'The body is the TypeScript or JavaScript source (`text/plain`). It must compile, load and declare this name, or the answer is 400 `MYC_ERR_BAD_RULE` with the reason and nothing is saved.',
    tags: ['rules'],
    params: NameParams,
    consumes: ['text/plain'],
    response: {
      200: { ...RuleRecord, description: 'the rule as it now runs' },
      ...errors({
        ...AUTH_ERRORS,
        400: 'a bad name, or a source that does not compile, load or declare this name (the reason is given)',
        403: ADMIN,
        413: `a source larger than ${MAX_SOURCE_BYTES} bytes`,
        503: NO_SERVICE,
      }),
    },
  },
} satisfies Record<string, FastifySchema & { summary: string; tags: string[] }>;

class RulesProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function registerRulesApi(api: FastifyInstance, deps: RulesApiDeps): void {
  const timeoutMs = deps.timeoutMs ?? RULES_TIMEOUT_MS;

  const gatherMs = deps.gatherMs ?? RULES_GATHER_MS;

  const ask = async <T>(
    request: RulesApiRequest,
    subject: string = rulesSubjects.api,
    waitMs = timeoutMs,
  ): Promise<T> => {
    let data: Uint8Array;
    try {
      data = (await deps.bus.request(subject, Buffer.from(JSON.stringify(request)), waitMs)).data;
    } catch (err) {
      if (err instanceof BusError && err.code === 'no-responders') {
        throw new RulesProblem(503, ErrorCode.Unavailable, 'no rules service is running');
      }
      if (err instanceof BusError && err.code === 'timeout') {
        throw new RulesProblem(503, ErrorCode.Unavailable, `the rules service did not answer in ${timeoutMs} ms`);
      }
      throw new RulesProblem(
        503,
        ErrorCode.Unavailable,
        `the rules service cannot be reached: ${(err as Error).message}`,
      );
    }
    const json = parseJson(Buffer.from(data.buffer, data.byteOffset, data.length).toString());
    if (!json.ok || typeof json.value !== 'object' || json.value === null) {
      throw new RulesProblem(503, ErrorCode.Unavailable, 'bad answer from the rules service');
    }
    const body = json.value as unknown as Partial<RulesApiError>;
    if (typeof body.error === 'string') {
      const status = typeof body.status === 'number' && body.status >= 400 && body.status < 600 ? body.status : 503;
      throw new RulesProblem(status, body.error, String(body.message));
    }
    return json.value as T;
  };

  /**
   * A GET across every live rules worker: one answers through the queue group (errors such as 404 are its), and
   * names the live workers; each other one is asked on its own subject. Their records merge by rule name.
   */
  const gather = async (request: RulesApiRequest) => {
    type Answer = { rules?: WorkerRuleRecord[]; rule?: WorkerRuleRecord; worker?: unknown; workers?: unknown };
    const first = await ask<Answer>(request);
    const records = (a: Answer) => (Array.isArray(a.rules) ? a.rules : a.rule === undefined ? [] : [a.rule]);
    const firstRecords = records(first);
    const answeredBy = typeof first.worker === 'string' ? first.worker : firstRecords[0]?.worker;
    const live = Array.isArray(first.workers)
      ? first.workers.filter((w): w is string => typeof w === 'string').slice(0, MAX_WORKERS)
      : [];
    const others = live.filter((w) => w !== answeredBy);
    const answered: string[] = answeredBy === undefined ? [] : [answeredBy];
    const perWorker: WorkerRuleRecord[][] = [firstRecords];
    const asked = await Promise.allSettled(
      others.map((w) =>
        ask<Answer>(request, rulesSubjects.worker(w), gatherMs).then(
          (a) => ({ w, a }),
          // It answered: it has no such rule (one not loaded there yet, say).
          (err) => (err instanceof RulesProblem && err.status === 404 ? { w, a: {} } : Promise.reject(err)),
        ),
      ),
    );
    for (const r of asked) {
      if (r.status !== 'fulfilled') continue;
      answered.push(r.value.w);
      perWorker.push(records(r.value.a));
    }
    const missing = others.filter((w) => !answered.includes(w));
    if (missing.length > 0) deps.log.warn({ missing }, 'rules workers did not answer: their counts are left out');
    const expected = live.length > 0 ? live : answered;
    return mergeRules(perWorker, { answered: [...answered].sort(), expected: [...expected].sort() });
  };

  const fail = (reply: FastifyReply, err: unknown, what: string) => {
    if (err instanceof RulesProblem) {
      deps.counters.rejected(`rules-${err.status}`).inc();
      if (err.status >= 500) deps.log.warn({ reason: err.message }, `${what}: rules service unavailable`);
      else deps.log.info({ status: err.status, reason: err.message }, `${what} refused`);
      return reply.code(err.status).send({ error: err.code, message: err.message });
    }
    deps.log.error({ err }, `${what} failed`);
    return reply.code(500).send({ error: 'MYC_ERR_HTTP', message: 'internal error' });
  };

  const adminOnly = (role: string | undefined) => {
    if (role !== 'admin')
      throw new RulesProblem(403, ErrorCode.Forbidden, `role ${role} may not change or read rule code`);
  };

  api.get('/rules', { schema: rulesSchemas.list }, async (_req, reply) => {
    try {
      return await gather({ op: 'list' });
    } catch (err) {
      return fail(reply, err, 'rules list');
    }
  });

  api.get<{ Params: { name: string } }>('/rules/:name', { schema: rulesSchemas.get }, async (req, reply) => {
    try {
      const [rule] = await gather({ op: 'get', name: req.params.name });
      if (rule === undefined) throw new RulesProblem(404, 'MYC_ERR_UNKNOWN_RULE', `no rule named ${req.params.name}`);
      return rule;
    } catch (err) {
      return fail(reply, err, 'rule query');
    }
  });

  for (const op of ['enable', 'disable'] as const) {
    api.post<{ Params: { name: string } }>(`/rules/:name/${op}`, { schema: rulesSchemas[op] }, async (req, reply) => {
      try {
        adminOnly(req.claims?.role);
        return (await ask<{ rule: unknown }>({ op, name: req.params.name, by: req.claims?.sub ?? 'unknown' })).rule;
      } catch (err) {
        return fail(reply, err, `rule ${op}`);
      }
    });
  }

  api.get<{ Params: { name: string } }>(
    '/rules/:name/source',
    { schema: rulesSchemas.getSource },
    async (req, reply) => {
      try {
        adminOnly(req.claims?.role);
        return await ask<{ name: string; source: string }>({ op: 'get-source', name: req.params.name });
      } catch (err) {
        return fail(reply, err, 'rule source');
      }
    },
  );

  api.put<{ Params: { name: string }; Body: unknown }>(
    '/rules/:name/source',
    { schema: rulesSchemas.putSource, bodyLimit: MAX_SOURCE_BYTES },
    async (req, reply) => {
      try {
        adminOnly(req.claims?.role);
        if (typeof req.body !== 'string') {
          throw new RulesProblem(400, ErrorCode.BadShape, 'the body must be the source as text/plain');
        }
        const by = req.claims?.sub ?? 'unknown';
        return (await ask<{ rule: unknown }>({ op: 'put-source', name: req.params.name, source: req.body, by })).rule;
      } catch (err) {
        return fail(reply, err, 'rule save');
      }
    },
  );
}
