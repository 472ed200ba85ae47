// The history store on PostgreSQL (node-postgres), for deployments that outgrow the embedded SQLite file.
// docs/history-postgres.md describes the schema, the TimescaleDB path and the measured figures.
//
// Schema: one row per (uid, resource) in history_series (with its settings), values keyed by that series id, so
// a value row carries 4 bytes of identity instead of two strings. The unique index (series, at, key) is both the
// time index every query walks and the idempotency check: a redelivered event carries the same key *and* the same
// uid, resource and broker timestamp, so "(series, at, key) already stored" is "key already stored" at the cost
// of one index instead of two (and TimescaleDB only allows unique indexes that include the time column).
// The index also carries num (INCLUDE), so a numeric bucket query is an index-only scan that never reads the table;
// that needs a fresh visibility map, hence autovacuum after every 1% of new rows instead of 20% (an insert-only
// table is otherwise vacuumed rarely, and the recent day, the one people look at, would be read from the heap).
import pg from 'pg';
import type { Json } from '../protocol/messages.ts';
import type {
  Aggregate,
  EventKind,
  EventRow,
  HistoryStore,
  Point,
  RangeQuery,
  ResourceSettings,
  StoreStats,
  ValueRow,
} from './store.ts';

export const POSTGRES_STORE_DEFAULTS = {
  poolSize: 4,
  /** A down server is reported as `unavailable` within this time instead of hanging the caller. */
  connectTimeoutMs: 5_000,
  /** Rows per round trip of stream(): a million-row CSV holds at most this many in memory. */
  streamChunkRows: 5_000,
  /** Forgotten series ids beyond this many (the cache is a convenience; the table is the truth). */
  seriesCacheSize: 100_000,
  /**
   * Settings of the store's connections, tuned for short interactive queries (docs/history-postgres.md):
   * work_mem: a day of 1 Hz values (86,400 rows) is sorted into its buckets, and the 4 MB default spills that
   * sort to disk; jit: compiling a query costs more CPU than a 50 ms query saves; parallel workers are forked per
   * query, which on a small machine costs more than they save and competes with ingest.
   */
  session: { work_mem: '32MB', jit: 'off', max_parallel_workers_per_gather: '0' } as Readonly<Record<string, string>>,
  /**
   * A bucket query probes the index once per bucket (an index-only range for avg/min/max/count, the newest row for
   * `last`), cheaper than grouping the whole range (measured: 19 against 52 ms of server CPU for a day of 1 Hz
   * values; 16 against 100+ for `last`), as long as the buckets are not too many: each empty bucket is a probe
   * too. Beyond this count it groups (or, for `last`, sorts) the range instead.
   */
  probeMaxBuckets: 20_000,
  /** TimescaleDB chunk length, and the age after which chunks are compressed. */
  chunkMs: 86_400_000,
  compressAfterMs: 7 * 86_400_000,
} as const;

export type InsertMethod = 'unnest' | 'values';

export interface PostgresStoreOptions {
  /** postgres://user@host:port/database (libpq-style URL). */
  url: string;
  poolSize?: number;
  connectTimeoutMs?: number;
  streamChunkRows?: number;
  /** Server settings for the store's connections, replacing POSTGRES_STORE_DEFAULTS.session name by name. */
  session?: Record<string, string>;
  /** `auto`: a hypertable with compression when the timescaledb extension is available; `off`: plain tables. */
  timescale?: 'auto' | 'off';
  /**
   * How a batch of values is sent: `unnest` (one array per column, one prepared statement; the default, faster,
   * see docs/history-postgres.md) or `values` (a multi-row VALUES list). Kept selectable for the benchmark.
   */
  insertMethod?: InsertMethod;
  /** Pool errors (an idle connection dropped by the server) are reported here; the pool replaces the connection. */
  onError?: (err: Error) => void;
}

/** The database cannot be reached or went away mid-call. The service answers 503 and retries later. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
  readonly code = 'unavailable';
}

/** SQLSTATE classes meaning "the server is not there for you": connection exceptions, shutdown, no slots. */
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[1-3]|53300)$/;
const UNAVAILABLE_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);
/** node-postgres reports a dropped socket or a connect timeout with these messages and no code. */
const UNAVAILABLE_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|not queryable|after calling end/;

function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATE.test(code) || UNAVAILABLE_ERRNO.has(code))) return true;
  return UNAVAILABLE_MESSAGE.test(err.message);
}

function translate(err: unknown): unknown {
  if (err instanceof StoreUnavailableError || !isUnavailable(err)) return err;
  return new StoreUnavailableError(`PostgreSQL unavailable: ${(err as Error).message}`, { cause: err });
}

const INT8_OID = 20;
/** Epoch milliseconds and counts fit a double exactly (below 2^53); node-postgres would return strings. */
const typeParsers = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID
      ? (text: string) => Number(text)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS history_series (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  uid text NOT NULL,
  resource text NOT NULL,
  settings jsonb,
  UNIQUE (uid, resource)
);
CREATE TABLE IF NOT EXISTS history_values (
  series integer NOT NULL,
  at bigint NOT NULL,
  num double precision,
  txt text,
  js text,
  key text COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS history_values_series_at_key ON history_values (series, at, key) INCLUDE (num);
ALTER TABLE history_values SET (autovacuum_vacuum_insert_scale_factor = 0.01);
CREATE TABLE IF NOT EXISTS history_events (
  uid text NOT NULL,
  at bigint NOT NULL,
  kind text NOT NULL,
  detail text NOT NULL,
  key text COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS history_events_uid_at_key ON history_events (uid, at, key);
CREATE INDEX IF NOT EXISTS history_events_at ON history_events (at);
`;

/**
 * Why three value columns: numbers must aggregate in SQL (num); strings stay strings (txt); anything else is
 * JSON text (js). JSON goes in text, not jsonb, because PostgreSQL text and jsonb cannot hold U+0000, which a
 * device may send: JSON.stringify writes it as the six characters \u0000, so a string containing it goes to js too.
 */
interface Encoded {
  num: number | null;
  txt: string | null;
  js: string | null;
}

function encode(value: Json): Encoded {
  if (typeof value === 'number' && Number.isFinite(value)) return { num: value, txt: null, js: null };
  if (typeof value === 'string' && !value.includes('\u0000')) return { num: null, txt: value, js: null };
  return { num: null, txt: null, js: JSON.stringify(value) };
}

function decode(num: number | null, txt: string | null, js: string | null): Json {
  if (num !== null) return num;
  if (txt !== null) return txt;
  return js === null ? null : (JSON.parse(js) as Json);
}

/** Values a bucket can hold for each aggregate (numbers only for avg/min/max, as the interface says). */
const BUCKET_SQL: Record<Exclude<Aggregate, 'last'>, string> = {
  avg: 'avg(num)',
  min: 'min(num)',
  max: 'max(num)',
  count: 'count(*)::float8',
};

const SERIES_ID = '(SELECT id FROM history_series WHERE uid = $1 AND resource = $2)';
const RAW_SQL = `SELECT at, num, txt, js FROM history_values
  WHERE series = ${SERIES_ID} AND at >= $3 AND at < $4 ORDER BY at, key LIMIT $5`;
const STREAM_FIRST_SQL = `SELECT at, key, num, txt, js FROM history_values
  WHERE series = ${SERIES_ID} AND at >= $3 AND at < $4 ORDER BY at, key LIMIT $5`;
// Keyset pagination: the next chunk starts after the last (at, key) seen, an index range scan each time.
const STREAM_NEXT_SQL = `SELECT at, key, num, txt, js FROM history_values
  WHERE series = ${SERIES_ID} AND (at, key) > ($3, $6) AND at < $4 ORDER BY at, key LIMIT $5`;

/** The newest value of each bucket: one backward index probe per bucket, empty buckets yield no row. */
const LAST_BY_PROBE_SQL = `WITH s AS ${SERIES_ID.replace('SELECT id', 'SELECT id AS sid')}
  SELECT b AS at, v.num, v.txt, v.js FROM s, generate_series($3::int8, $4::int8 - 1, $5::int8) b
  CROSS JOIN LATERAL (SELECT num, txt, js FROM history_values
    WHERE series = s.sid AND at >= b AND at < least(b + $5::int8, $4::int8) ORDER BY at DESC, key DESC LIMIT 1) v
  LIMIT $6`;

/** One aggregate per bucket over its index range; HAVING leaves empty buckets out, as GROUP BY does. */
function aggregateByProbeSql(agg: Exclude<Aggregate, 'last'>): string {
  const numericOnly = agg === 'count' ? '' : 'AND num IS NOT NULL';
  return `WITH s AS ${SERIES_ID.replace('SELECT id', 'SELECT id AS sid')}
  SELECT b AS at, v.num, NULL AS txt, NULL AS js FROM s, generate_series($3::int8, $4::int8 - 1, $5::int8) b
  CROSS JOIN LATERAL (SELECT ${BUCKET_SQL[agg]} AS num FROM history_values
    WHERE series = s.sid AND at >= b AND at < least(b + $5::int8, $4::int8) ${numericOnly} HAVING count(*) > 0) v
  LIMIT $6`;
}

function bucketSql(agg: Aggregate, buckets: number): { name: string; text: string } {
  const probe = buckets <= POSTGRES_STORE_DEFAULTS.probeMaxBuckets;
  return { name: `history-bucket-${agg}-${probe ? 'probe' : 'group'}`, text: bucketQueryText(agg, probe) };
}

function bucketQueryText(agg: Aggregate, probe: boolean): string {
  // The bucket of a value at `at` starts at from + floor((at - from) / step) * step; at >= from, so integer
  // division is floor.
  const bucket = '$3::int8 + (at - $3::int8) / $5::int8 * $5::int8';
  if (probe) return agg === 'last' ? LAST_BY_PROBE_SQL : aggregateByProbeSql(agg);
  if (agg === 'last') {
    return `SELECT DISTINCT ON (b) b AS at, num, txt, js FROM (
        SELECT ${bucket} AS b, at AS t, key, num, txt, js FROM history_values
        WHERE series = ${SERIES_ID} AND at >= $3 AND at < $4) v
      ORDER BY b, t DESC, key DESC LIMIT $6`;
  }
  const numericOnly = agg === 'count' ? '' : 'AND num IS NOT NULL';
  return `SELECT ${bucket} AS at, ${BUCKET_SQL[agg]} AS num, NULL AS txt, NULL AS js FROM history_values
    WHERE series = ${SERIES_ID} AND at >= $3 AND at < $4 ${numericOnly}
    GROUP BY 1 ORDER BY 1 LIMIT $6`;
}

const PRUNE_RETENTION_SQL = `WITH doomed AS (
    SELECT d.series, d.at, d.key FROM history_series s
    CROSS JOIN LATERAL (
      SELECT v.series, v.at, v.key FROM history_values v
      WHERE v.series = s.id
        AND v.at < ($1::int8 - COALESCE((s.settings->>'retentionMs')::float8, $2::float8))::int8
      ORDER BY v.at LIMIT $3) d
    LIMIT $3)
  DELETE FROM history_values v USING doomed d WHERE v.series = d.series AND v.at = d.at AND v.key = d.key`;
const PRUNE_MAX_HISTORY_SQL = `WITH doomed AS (
    SELECT d.series, d.at, d.key FROM history_series s
    CROSS JOIN LATERAL (
      SELECT v.series, v.at, v.key FROM history_values v WHERE v.series = s.id
      ORDER BY v.at DESC, v.key DESC OFFSET (s.settings->>'maxHistory')::float8::int8 LIMIT $1) d
    WHERE s.settings ? 'maxHistory'
    LIMIT $1)
  DELETE FROM history_values v USING doomed d WHERE v.series = d.series AND v.at = d.at AND v.key = d.key`;
const PRUNE_EVENTS_SQL = `WITH doomed AS (
    SELECT uid, at, key FROM history_events WHERE at < $1 ORDER BY at LIMIT $2)
  DELETE FROM history_events e USING doomed d WHERE e.uid = d.uid AND e.at = d.at AND e.key = d.key`;

const INSERT_VALUES_UNNEST_SQL = `INSERT INTO history_values (series, at, num, txt, js, key)
  SELECT * FROM unnest($1::int4[], $2::int8[], $3::float8[], $4::text[], $5::text[], $6::text[])
  ON CONFLICT DO NOTHING`;
const INSERT_EVENTS_SQL = `INSERT INTO history_events (uid, at, kind, detail, key)
  SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[])
  ON CONFLICT DO NOTHING`;

const SETTINGS_NUMBERS = ['maxHistory', 'retentionMs', 'minIntervalMs', 'decimals'] as const;

/** Only the known fields with the right types: settings come back as plain data, never a prototype key. */
function cleanSettings(raw: unknown): ResourceSettings {
  const out: ResourceSettings = {};
  if (raw === null || typeof raw !== 'object') return out;
  const source = raw as Record<string, unknown>;
  for (const name of SETTINGS_NUMBERS) {
    const v = Object.hasOwn(source, name) ? source[name] : undefined;
    if (typeof v === 'number' && Number.isFinite(v)) out[name] = v;
  }
  if (Object.hasOwn(source, 'units') && typeof source.units === 'string') out.units = source.units;
  return out;
}

const SETTING_NAME = /^[a-z_][a-z0-9_.]*$/;
const SETTING_VALUE = /^[A-Za-z0-9_.-]+$/;

/** The libpq `options` string (`-c name=value ...`); names and values are checked so nothing else gets in. */
function sessionOptions(settings: Record<string, string>): string {
  return Object.entries(settings)
    .map(([name, value]) => {
      if (!SETTING_NAME.test(name) || !SETTING_VALUE.test(value)) {
        throw new RangeError(`bad PostgreSQL session setting ${JSON.stringify(name)}=${JSON.stringify(value)}`);
      }
      return `-c ${name}=${value}`;
    })
    .join(' ');
}

function seriesKey(uid: string, resource: string): string {
  return `${uid}\u0000${resource}`;
}

interface ValueDbRow {
  at: number;
  num: number | null;
  txt: string | null;
  js: string | null;
}

export class PostgresHistoryStore implements HistoryStore {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;
  private readonly seriesIds = new Map<string, number>();
  private readonly options: Required<Omit<PostgresStoreOptions, 'onError' | 'session'>> &
    Pick<PostgresStoreOptions, 'onError' | 'session'>;
  /** True once open() made history_values a TimescaleDB hypertable. */
  private hypertable = false;

  constructor(options: PostgresStoreOptions) {
    this.options = {
      poolSize: POSTGRES_STORE_DEFAULTS.poolSize,
      connectTimeoutMs: POSTGRES_STORE_DEFAULTS.connectTimeoutMs,
      streamChunkRows: POSTGRES_STORE_DEFAULTS.streamChunkRows,
      timescale: 'auto',
      insertMethod: 'unnest',
      ...options,
    };
    this.pool = new pg.Pool({
      connectionString: this.options.url,
      max: this.options.poolSize,
      connectionTimeoutMillis: this.options.connectTimeoutMs,
      types: typeParsers,
      application_name: 'mycelium-history',
      options: sessionOptions({ ...POSTGRES_STORE_DEFAULTS.session, ...options.session }),
    });
    // An idle connection that the server drops emits 'error' on the pool; unhandled, it would end the process.
    // The pool discards that connection and opens another for the next query.
    this.pool.on('error', (err) => this.options.onError?.(err));
  }

  /** Whether history_values is a TimescaleDB hypertable (decided by open()). */
  get usesTimescale(): boolean {
    return this.hypertable;
  }

  async open(): Promise<void> {
    await this.run(async () => {
      const client = await this.pool.connect();
      try {
        // Two stores opening the same database at once must not race on CREATE ... IF NOT EXISTS.
        await client.query('SELECT pg_advisory_lock(hashtext($1))', ['mycelium-history-schema']);
        await client.query(SCHEMA);
        this.hypertable = this.options.timescale === 'auto' && (await this.enableTimescale(client));
      } finally {
        await client.query('SELECT pg_advisory_unlock(hashtext($1))', ['mycelium-history-schema']).catch(() => {});
        client.release();
      }
    });
  }

  /**
   * history_values becomes a hypertable in day-long chunks, compressed after a week (segmented by series, so a
   * compressed chunk still answers one series' range without decompressing the others). Only when the extension
   * is installed on the server and loadable; otherwise the plain table serves (same queries, no compression).
   * Not exercised by the test suite: Debian's postgresql has no TimescaleDB (docs/history-postgres.md).
   */
  private async enableTimescale(client: pg.PoolClient): Promise<boolean> {
    const available = await client.query("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'");
    if (available.rowCount === 0) return false;
    try {
      await client.query('CREATE EXTENSION IF NOT EXISTS timescaledb');
      await client.query(
        `SELECT create_hypertable('history_values', 'at', chunk_time_interval => $1::int8,
           if_not_exists => true, migrate_data => true)`,
        [POSTGRES_STORE_DEFAULTS.chunkMs],
      );
      await client.query(`CREATE OR REPLACE FUNCTION history_now_ms() RETURNS bigint LANGUAGE sql STABLE AS
        $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$`);
      await client.query(`SELECT set_integer_now_func('history_values', 'history_now_ms', replace_if_exists => true)`);
      await client.query(`ALTER TABLE history_values SET (timescaledb.compress,
        timescaledb.compress_segmentby = 'series', timescaledb.compress_orderby = 'at, key')`);
      await client.query(`SELECT add_compression_policy('history_values', $1::int8, if_not_exists => true)`, [
        POSTGRES_STORE_DEFAULTS.compressAfterMs,
      ]);
      return true;
    } catch (err) {
      // Listed but not loadable (not in shared_preload_libraries) or not permitted: the plain table works.
      this.options.onError?.(new Error('TimescaleDB is available but could not be enabled', { cause: err }));
      return false;
    }
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
  }

  async insert(values: readonly ValueRow[], events: readonly EventRow[]): Promise<void> {
    if (values.length === 0 && events.length === 0) return;
    await this.run(async () => {
      const series = values.length === 0 ? [] : await this.seriesFor(values);
      const statements: pg.QueryConfig[] = [];
      if (values.length > 0) statements.push(this.valuesStatement(values, series));
      if (events.length > 0) statements.push(eventsStatement(events));
      if (statements.length === 1) {
        // One statement is atomic on its own: no BEGIN/COMMIT round trips.
        await this.pool.query(statements[0]);
        return;
      }
      const client = await this.pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        for (const statement of statements) await client.query(statement);
        await client.query('COMMIT');
      } catch (err) {
        broken = err as Error;
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        // A connection that failed mid-transaction is not returned to the pool.
        client.release(broken !== undefined && isUnavailable(broken) ? broken : undefined);
      }
    });
  }

  private valuesStatement(values: readonly ValueRow[], series: number[]): pg.QueryConfig {
    const n = values.length;
    const at = new Array<number>(n);
    const num = new Array<number | null>(n);
    const txt = new Array<string | null>(n);
    const js = new Array<string | null>(n);
    const key = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const row = values[i];
      const e = encode(row.value);
      at[i] = row.at;
      num[i] = e.num;
      txt[i] = e.txt;
      js[i] = e.js;
      key[i] = row.key;
    }
    if (this.options.insertMethod === 'unnest') {
      return { name: 'history-insert-values', text: INSERT_VALUES_UNNEST_SQL, values: [series, at, num, txt, js, key] };
    }
    const params: unknown[] = [];
    const tuples: string[] = [];
    for (let i = 0; i < n; i++) {
      const p = params.length;
      tuples.push(`($${p + 1}::int4, $${p + 2}::int8, $${p + 3}::float8, $${p + 4}, $${p + 5}, $${p + 6})`);
      params.push(series[i], at[i], num[i], txt[i], js[i], key[i]);
    }
    return {
      text: `INSERT INTO history_values (series, at, num, txt, js, key) VALUES ${tuples.join(',')} ON CONFLICT DO NOTHING`,
      values: params,
    };
  }

  /** The series id of every row, creating the series not seen before (one round trip or two, for new ones). */
  private async seriesFor(values: readonly ValueRow[]): Promise<number[]> {
    const missing = new Map<string, [string, string]>();
    for (const row of values) {
      const k = seriesKey(row.uid, row.resource);
      if (!this.seriesIds.has(k)) missing.set(k, [row.uid, row.resource]);
    }
    if (missing.size > 0) {
      if (this.seriesIds.size + missing.size > POSTGRES_STORE_DEFAULTS.seriesCacheSize) this.seriesIds.clear();
      const uids = [...missing.values()].map(([u]) => u);
      const resources = [...missing.values()].map(([, r]) => r);
      await this.pool.query(
        `INSERT INTO history_series (uid, resource) SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT DO NOTHING`,
        [uids, resources],
      );
      const found = await this.pool.query<{ id: number; uid: string; resource: string }>(
        `SELECT s.id, s.uid, s.resource FROM history_series s
         JOIN unnest($1::text[], $2::text[]) AS w(uid, resource) ON s.uid = w.uid AND s.resource = w.resource`,
        [uids, resources],
      );
      for (const r of found.rows) this.seriesIds.set(seriesKey(r.uid, r.resource), r.id);
    }
    return values.map((row) => {
      const id = this.seriesIds.get(seriesKey(row.uid, row.resource));
      if (id === undefined) throw new Error(`history series ${row.uid}/${row.resource} was not created`);
      return id;
    });
  }

  async query(q: RangeQuery): Promise<Point[]> {
    checkRange(q.from, q.to, q.limit);
    if (q.step === undefined) {
      const { rows } = await this.run(() =>
        this.pool.query<ValueDbRow>({
          name: 'history-raw',
          text: RAW_SQL,
          values: [q.uid, q.resource, q.from, q.to, q.limit],
        }),
      );
      return rows.map((r) => ({ at: r.at, value: decode(r.num, r.txt, r.js) }));
    }
    if (!Number.isSafeInteger(q.step) || q.step <= 0)
      throw new RangeError(`step must be a positive integer, got ${q.step}`);
    const agg = q.agg ?? 'avg';
    const buckets = Math.ceil((q.to - q.from) / q.step);
    const statement = bucketSql(agg, buckets);
    const { rows } = await this.run(() =>
      this.pool.query<ValueDbRow>({
        ...statement,
        values: [q.uid, q.resource, q.from, q.to, q.step, q.limit],
      }),
    );
    return rows.map((r) => ({ at: r.at, value: decode(r.num, r.txt, r.js) }));
  }

  async *stream(q: Pick<RangeQuery, 'uid' | 'resource' | 'from' | 'to'>): AsyncIterable<Point> {
    checkRange(q.from, q.to, 1);
    const chunk = this.options.streamChunkRows;
    let last: { at: number; key: string } | undefined;
    for (;;) {
      const after = last;
      const { rows } = await this.run(() =>
        this.pool.query<ValueDbRow & { key: string }>(
          after === undefined
            ? { name: 'history-stream-first', text: STREAM_FIRST_SQL, values: [q.uid, q.resource, q.from, q.to, chunk] }
            : {
                name: 'history-stream-next',
                text: STREAM_NEXT_SQL,
                values: [q.uid, q.resource, after.at, q.to, chunk, after.key],
              },
        ),
      );
      for (const r of rows) yield { at: r.at, value: decode(r.num, r.txt, r.js) };
      if (rows.length < chunk) return;
      const tail = rows[rows.length - 1];
      last = { at: tail.at, key: tail.key };
    }
  }

  async events(uid: string, from: number, to: number, limit: number): Promise<EventRow[]> {
    checkRange(from, to, limit);
    const { rows } = await this.run(() =>
      this.pool.query<{ at: number; uid: string; kind: EventKind; detail: string; key: string }>({
        name: 'history-events',
        text: `SELECT at, uid, kind, detail, key FROM history_events
          WHERE uid = $1 AND at >= $2 AND at < $3 ORDER BY at, key LIMIT $4`,
        values: [uid, from, to, limit],
      }),
    );
    return rows.map((r) => ({ at: r.at, uid: r.uid, kind: r.kind, detail: JSON.parse(r.detail) as Json, key: r.key }));
  }

  async getSettings(uid: string, resource: string): Promise<ResourceSettings | undefined> {
    const { rows } = await this.run(() =>
      this.pool.query<{ settings: unknown }>(
        'SELECT settings FROM history_series WHERE uid = $1 AND resource = $2 AND settings IS NOT NULL',
        [uid, resource],
      ),
    );
    return rows.length === 0 ? undefined : cleanSettings(rows[0].settings);
  }

  async putSettings(uid: string, resource: string, settings: ResourceSettings): Promise<void> {
    await this.run(() =>
      this.pool.query(
        `INSERT INTO history_series (uid, resource, settings) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (uid, resource) DO UPDATE SET settings = excluded.settings`,
        [uid, resource, JSON.stringify(cleanSettings(settings))],
      ),
    );
  }

  async prune(now: number, defaultRetentionMs: number, budget: number): Promise<number> {
    return this.run(async () => {
      let deleted = 0;
      const left = (): number => budget - deleted;
      if (left() > 0)
        deleted += (await this.pool.query(PRUNE_RETENTION_SQL, [now, defaultRetentionMs, left()])).rowCount ?? 0;
      if (left() > 0) deleted += (await this.pool.query(PRUNE_MAX_HISTORY_SQL, [left()])).rowCount ?? 0;
      if (left() > 0) {
        deleted += (await this.pool.query(PRUNE_EVENTS_SQL, [now - defaultRetentionMs, left()])).rowCount ?? 0;
      }
      return deleted;
    });
  }

  async stats(): Promise<StoreStats> {
    const valuesBytes = this.hypertable
      ? "hypertable_size('history_values')"
      : "pg_total_relation_size('history_values')";
    const { rows } = await this.run(() =>
      this.pool.query<StoreStats>(`SELECT
        (SELECT count(*) FROM history_values) AS values,
        (SELECT count(*) FROM history_events) AS events,
        ${valuesBytes} + pg_total_relation_size('history_events') + pg_total_relation_size('history_series') AS bytes`),
    );
    return rows[0];
  }

  /** Every database call goes through here: a lost server becomes a StoreUnavailableError. */
  private async run<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw translate(err);
    }
  }
}

/**
 * Times and limits become int8 parameters: a fraction, NaN or 1e300 would come back as a PostgreSQL syntax error
 * that looks like a server fault. The service validates its input; this keeps the store's own contract plain.
 */
function checkRange(from: number, to: number, limit: number): void {
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to)) {
    throw new RangeError(`from and to must be integer epoch milliseconds, got ${from} and ${to}`);
  }
  if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError(`limit must be a whole number, got ${limit}`);
}

function eventsStatement(events: readonly EventRow[]): pg.QueryConfig {
  return {
    name: 'history-insert-events',
    text: INSERT_EVENTS_SQL,
    values: [
      events.map((e) => e.uid),
      events.map((e) => e.at),
      events.map((e) => e.kind),
      events.map((e) => JSON.stringify(e.detail)),
      events.map((e) => e.key),
    ],
  };
}
