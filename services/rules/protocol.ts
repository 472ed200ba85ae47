// What the rules service and the broker (or any client) say to each other on the bus, and the checks of what a
// rule file declares. Schemas in the house style (TypeBox, compiled once); no I/O here.
import { type Static, Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { PREFIX } from '../bus/subjects.ts';

/** A rule's name: also its file name in the folder and a metrics label, so a narrow alphabet. */
export const RULE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';
export const RuleName = Type.String({ pattern: RULE_NAME_PATTERN, description: '1-64 of A-Z a-z 0-9 _ . -' });

/** A node glob or resource name in a trigger: printable, at most 256 characters. */
const Glob = Type.String({ minLength: 1, maxLength: 256, pattern: '^[^\\u0000-\\u001f\\u007f-\\u009f]+$' });

const Schedule = Type.Union([
  Type.Object({ every: Type.String({ maxLength: 32 }) }, { additionalProperties: false }),
  Type.Object({ cron: Type.String({ maxLength: 128 }) }, { additionalProperties: false }),
]);

/** What a rule file declares, as its worker reports it (functions replaced by `true`). */
export const RuleDescriptor = Type.Object({
  name: RuleName,
  description: Type.Optional(Type.String({ maxLength: 1000 })),
  timeLimitMs: Type.Optional(Type.Integer({ minimum: 1 })),
  on: Type.Object(
    {
      update: Type.Optional(
        Type.Object(
          { node: Glob, resource: Glob, when: Type.Optional(Type.Literal(true)) },
          { additionalProperties: false },
        ),
      ),
      new: Type.Optional(Type.Object({ node: Glob }, { additionalProperties: false })),
      out: Type.Optional(Type.Object({ node: Glob, reason: Type.Optional(Glob) }, { additionalProperties: false })),
      reset: Type.Optional(Type.Object({ node: Glob }, { additionalProperties: false })),
      write: Type.Optional(Type.Object({ node: Glob, resource: Type.Optional(Glob) }, { additionalProperties: false })),
      schedule: Type.Optional(Schedule),
    },
    { additionalProperties: false, minProperties: 1 },
  ),
});
export type RuleDescriptor = Static<typeof RuleDescriptor>;

const descriptorCheck = TypeCompiler.Compile(RuleDescriptor);

/** Why a reported definition is not a rule, or undefined when it is one. */
export function descriptorProblem(value: unknown): string | undefined {
  if (descriptorCheck.Check(value)) return undefined;
  const e = descriptorCheck.Errors(value).First();
  if (e === undefined) return 'not a rule definition';
  const path = e.path === '' ? 'the definition' : e.path.slice(1).replaceAll('/', '.');
  if (e.path === '/on' && typeof value === 'object' && value !== null) {
    const on = (value as { on?: unknown }).on;
    if (typeof on === 'object' && on !== null && Object.keys(on).length === 0) return 'on: the rule has no trigger';
  }
  return `${path}: ${e.message}`;
}

export const RUN_STATUSES = ['ok', 'skipped', 'error', 'time-limit', 'memory', 'exited', 'timeout', 'dropped'] as const;

const RunRecord = Type.Object({
  at: Type.Number({ description: 'when the run started (epoch ms)' }),
  status: Type.Union(RUN_STATUSES.map((s) => Type.Literal(s))),
  ms: Type.Number({ description: 'wall time, I/O included' }),
  trigger: Type.String(),
  uid: Type.Optional(Type.String()),
  error: Type.Optional(Type.String()),
  worker: Type.Optional(Type.String({ description: 'the rules worker that ran it (set when several answered)' })),
});
export type RunRecord = Static<typeof RunRecord>;

export const RULE_STATUSES = ['running', 'disabled', 'failed', 'loading'] as const;

export const RuleRecord = Type.Object(
  {
    name: Type.String(),
    file: Type.String({ description: 'the file in the rules folder' }),
    status: Type.Union(
      RULE_STATUSES.map((s) => Type.Literal(s)),
      {
        description: 'running; disabled (by an admin or after repeated failures: see reason); failed: does not load',
      },
    ),
    reason: Type.Optional(Type.String()),
    description: Type.Optional(Type.String()),
    triggers: Type.Array(Type.String()),
    timeLimitMs: Type.Number(),
    runs: Type.Integer({ minimum: 0 }),
    errors: Type.Integer({ minimum: 0 }),
    skipped: Type.Integer({ minimum: 0 }),
    dropped: Type.Integer({ minimum: 0 }),
    restarts: Type.Integer({ minimum: 0 }),
    consecutiveFailures: Type.Integer({ minimum: 0 }),
    p50Ms: Type.Optional(Type.Number()),
    p99Ms: Type.Optional(Type.Number()),
    lastRun: Type.Optional(RunRecord),
    lastError: Type.Optional(Type.Object({ at: Type.Number(), message: Type.String() })),
    recent: Type.Array(RunRecord, { description: 'the last runs, newest first' }),
    worker: Type.String({
      description:
        'the rules workers whose counts are in this record, comma-separated (enable, disable, save: the one that acted)',
    }),
    workers: Type.Optional(
      Type.Object(
        {
          answered: Type.Array(Type.String()),
          expected: Type.Array(Type.String()),
          missing: Type.Array(Type.String(), {
            description: 'expected but did not answer in time: counts lack theirs',
          }),
        },
        { description: 'GET: the live rules workers, and which of them are counted' },
      ),
    ),
    percentiles: Type.Optional(
      Type.Union([Type.Literal('histogram'), Type.Literal('max-of-workers')], {
        description:
          "how p50/p99 were merged across workers: from the summed histograms, or (histograms that differ) each the workers' largest",
      }),
    ),
    byWorker: Type.Optional(
      Type.Array(
        Type.Object({
          worker: Type.String(),
          status: Type.String(),
          reason: Type.Optional(Type.String()),
          runs: Type.Integer({ minimum: 0 }),
          errors: Type.Integer({ minimum: 0 }),
        }),
        { description: 'GET with several workers: each one’s status and counts' },
      ),
    ),
  },
  { title: 'RuleRecord', description: 'a rule as the rules service runs it' },
);
export type RuleRecord = Static<typeof RuleRecord>;

/** A run-duration histogram as a worker reports it, so the broker can sum several workers' (ms bounds). */
export interface DurationBuckets {
  boundsMs: number[];
  /** One more than boundsMs: the last counts the runs above the last bound. */
  counts: number[];
}

/** A rule as one worker reports it on the bus: the record plus its histogram (not sent to REST clients). */
export type WorkerRuleRecord = RuleRecord & { buckets?: DurationBuckets };

/** Requests on `myc.rules.api` (request/reply, queue group `rules-api`) and on a worker's own `rulesSubjects.worker(id)`. */
export type RulesApiRequest =
  | { op: 'list' }
  | { op: 'get'; name: string }
  | { op: 'enable'; name: string; by: string }
  | { op: 'disable'; name: string; by: string }
  | { op: 'get-source'; name: string }
  | { op: 'put-source'; name: string; source: string; by: string };

/** A refusal: `status` is the HTTP status the broker answers with. */
export interface RulesApiError {
  error: string;
  message: string;
  status: number;
}

/**
 * list and get: `worker` is the answering worker, `workers` the live ones as it sees them (itself included), so
 * the broker can ask the others.
 */
export type RulesApiReply =
  | { rules: WorkerRuleRecord[]; worker?: string; workers?: string[] }
  | { rule: WorkerRuleRecord; worker?: string; workers?: string[] }
  | { name: string; source: string }
  | RulesApiError;

/** Largest rule source accepted through the API. */
export const MAX_SOURCE_BYTES = 256 * 1024;

export const RuleErrorCode = {
  UnknownRule: 'MYC_ERR_UNKNOWN_RULE',
  BadRule: 'MYC_ERR_BAD_RULE',
} as const;

export const rulesSubjects = {
  /** The REST API's questions (request/reply, queue group `rules-api`: one worker answers). */
  api: `${PREFIX}.rules.api`,
  /** A worker changed the folder or a rule's enabled flag: every worker reloads what it names. */
  changed: `${PREFIX}.rules.changed`,
  /** Rules workers' heartbeats: who shares the nodes (scale-out). */
  alive: `${PREFIX}.rules.alive`,
  /** Every worker answers with the rules admins disabled: a worker that starts adopts the running ones' list. */
  disabled: `${PREFIX}.rules.disabled`,
  /** One worker's own API subject (no queue): the broker gathers every worker's counts for GET. */
  worker: (id: string) => `${PREFIX}.rules.worker.${workerToken(id)}`,
} as const;

/** A worker id as one subject token: itself when it is plain, else `~` and its hex (no `.`, `*`, `>` or space). */
function workerToken(id: string): string {
  return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : `~${Buffer.from(id).toString('hex')}`;
}
