// npm run bench:history — the history stores (SQLite and PostgreSQL) under the issue 13 goals, through the
// HistoryStore interface only:
//   - ingest: --values N values (default 10 million) in batches of --batch rows (1,000, as the service writes),
//     one batch at a time; the sustained rate over the whole fill, and over its first and last tenth;
//   - query: one day of 1 Hz data (86,400 points) downsampled to 1,000 buckets (step 86.4 s), --queries times on
//     random series and days of that database; p50 / p99 / max per aggregate;
//   - stream: the raw points of a --stream-rows series (1 million) formatted as CSV lines; rows/s, and the
//     process's RSS before and at its peak during the stream;
//   - bytes per stored value: stats().bytes / stats().values after the fill;
//   - PostgreSQL only: --compare-rows values inserted with unnest arrays and with a multi-row VALUES list.
// The data: S series at 1 Hz over four days (S = the rest of N / 345,600) and one series at 10 Hz holding the
// stream rows, written in time order across all series as live nodes would.
// PostgreSQL is a throwaway cluster started like the tests' (utils/history/postgres-cluster.ts), with the
// server's default durability (fsync, synchronous_commit on). SQLite runs on a file in a temporary directory once
// services/history/store-sqlite.ts is merged; until then its half says it was skipped.
// Usage: npm run bench:history [-- --values 1000000 --stores postgres --queries 200 --stream-rows 1000000]
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Aggregate, HistoryStore, ValueRow } from '../../services/history/store.ts';
import { startPostgresCluster } from '../history/postgres-cluster.ts';
import pg from 'pg';
import { PostgresHistoryStore } from '../../services/history/store-postgres.ts';
import { createDatabase, loadSqlite, postgresStoreOn } from '../history/stores.ts';
import { percentile } from './proc.ts';

const { values: args } = parseArgs({
  options: {
    values: { type: 'string', default: '10000000' },
    batch: { type: 'string', default: '1000' },
    queries: { type: 'string', default: '200' },
    'stream-rows': { type: 'string', default: '1000000' },
    'compare-rows': { type: 'string', default: '300000' },
    stores: { type: 'string', default: 'sqlite,postgres' },
    /** postgres -c settings, comma-separated name=value, on top of the server's defaults. */
    'pg-settings': { type: 'string', default: '' },
  },
});
const TOTAL = Number(args.values);
const BATCH = Number(args.batch);
const QUERIES = Number(args.queries);
const STREAM_ROWS = Math.min(Number(args['stream-rows']), Math.floor(TOTAL / 2));
const COMPARE_ROWS = Number(args['compare-rows']);
const STORES = args.stores.split(',').map((s) => s.trim());
const PG_SETTINGS = Object.fromEntries(
  args['pg-settings']
    .split(',')
    .filter((kv) => kv.includes('='))
    .map((kv) => kv.split('=', 2) as [string, string]),
);

const DAY_MS = 86_400_000;
const SERIES_DAYS = 4;
const BUCKETS = 1000;
const WARMUP_QUERIES = 10;
const T0 = Date.UTC(2026, 0, 1);
const STREAM_UID = 'bench-stream';
const STREAM_RESOURCE = 'vibration';
const STREAM_INTERVAL_MS = 100;
const RSS_SAMPLE_MS = 20;

interface Layout {
  series: number;
  /** Seconds of 1 Hz data per series. */
  seconds: number;
  /** Values of the 10 Hz stream series. */
  streamRows: number;
}

function layout(): Layout {
  const rest = TOTAL - STREAM_ROWS;
  const series = Math.max(1, Math.round(rest / (SERIES_DAYS * 86_400)));
  return { series, seconds: Math.floor(rest / series), streamRows: STREAM_ROWS };
}

/** Every value of the database in time order across series, BATCH rows at a time. */
function* batches(l: Layout): Generator<ValueRow[]> {
  let batch: ValueRow[] = [];
  let key = 0;
  const push = (row: Omit<ValueRow, 'key'>): ValueRow[] | undefined => {
    batch.push({ ...row, key: `bench:${++key}` });
    if (batch.length < BATCH) return undefined;
    const full = batch;
    batch = [];
    return full;
  };
  const streamSeconds = Math.ceil((l.streamRows * STREAM_INTERVAL_MS) / 1000);
  const seconds = Math.max(l.seconds, streamSeconds);
  let streamed = 0;
  for (let s = 0; s < seconds; s++) {
    const at = T0 + s * 1000;
    if (s < l.seconds) {
      for (let k = 0; k < l.series; k++) {
        const value = Math.round((20 + 5 * Math.sin(s / 3600 + k) + ((s * 7919 + k) % 100) / 100) * 100) / 100;
        const full = push({ at, uid: `node-${k}`, resource: 'temperature', value });
        if (full) yield full;
      }
    }
    for (let i = 0; i < 1000 / STREAM_INTERVAL_MS && streamed < l.streamRows; i++, streamed++) {
      const full = push({
        at: at + i * STREAM_INTERVAL_MS,
        uid: STREAM_UID,
        resource: STREAM_RESOURCE,
        value: streamed % 997,
      });
      if (full) yield full;
    }
  }
  if (batch.length > 0) yield batch;
}

interface IngestResult {
  values: number;
  seconds: number;
  rate: number;
  firstTenthRate: number;
  lastTenthRate: number;
}

async function ingest(store: HistoryStore, l: Layout, label: string): Promise<IngestResult> {
  const start = performance.now();
  const marks: { values: number; at: number }[] = [{ values: 0, at: start }];
  let values = 0;
  let nextReport = 1_000_000;
  for (const batch of batches(l)) {
    await store.insert(batch, []);
    values += batch.length;
    marks.push({ values, at: performance.now() });
    if (values >= nextReport) {
      const s = (performance.now() - start) / 1000;
      console.log(`  ${label}: ${values.toLocaleString('en')} values in ${s.toFixed(1)} s`);
      nextReport += 1_000_000;
    }
  }
  const end = performance.now();
  const tenth = (from: number, to: number): number => {
    const a = marks.find((m) => m.values >= from) ?? marks[0];
    const b = marks.find((m) => m.values >= to) ?? marks[marks.length - 1];
    return ((b.values - a.values) * 1000) / Math.max(1, b.at - a.at);
  };
  return {
    values,
    seconds: (end - start) / 1000,
    rate: (values * 1000) / (end - start),
    firstTenthRate: tenth(0, values / 10),
    lastTenthRate: tenth((values * 9) / 10, values),
  };
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux

/**
 * User + system CPU time of a server and its child processes (postgres and its backends, which are its children
 * but each in its own session), in milliseconds. With other work on the machine, wall-clock latency mostly
 * measures waiting for a core; CPU time per query does not.
 */
function serverTreeCpuMs(pid: number): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // After the command name: state, ppid, pgrp, ...; utime and stime are the 12th and 13th.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(entry) !== pid && Number(fields[1]) !== pid) continue;
      total += ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return total;
}

/** CPU milliseconds spent so far by the database server's processes (0 for an embedded store). */
type CpuClock = () => number;

const processCpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** A tiny deterministic generator, so every run asks the same queries. */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1_664_525) + 1_013_904_223) >>> 0;
    return x / 2 ** 32;
  };
}

interface QueryResult {
  agg: Aggregate;
  points: number;
  p50: number;
  p99: number;
  max: number;
  /** Mean CPU per query: this process's, and the database server's (0 for an embedded store). */
  clientCpuMs: number;
  serverCpuMs: number;
}

async function queries(store: HistoryStore, l: Layout, agg: Aggregate, serverCpu: CpuClock): Promise<QueryResult> {
  const random = lcg(13);
  const span = Math.min(DAY_MS, l.seconds * 1000);
  const step = Math.max(1, Math.floor(span / BUCKETS));
  const times: number[] = [];
  let points = 0;
  let client0 = 0;
  let server0 = 0;
  for (let i = 0; i < WARMUP_QUERIES + QUERIES; i++) {
    if (i === WARMUP_QUERIES) {
      client0 = processCpuMs();
      server0 = serverCpu();
    }
    const series = Math.floor(random() * l.series);
    const from = T0 + Math.floor((random() * (l.seconds * 1000 - span)) / 1000) * 1000;
    const t = performance.now();
    const got = await store.query({
      uid: `node-${series}`,
      resource: 'temperature',
      from,
      to: from + span,
      step,
      agg,
      limit: BUCKETS + 1,
    });
    if (i >= WARMUP_QUERIES) {
      times.push(performance.now() - t);
      points = got.length;
    }
  }
  const clientCpuMs = (processCpuMs() - client0) / QUERIES;
  const serverCpuMs = (serverCpu() - server0) / QUERIES;
  times.sort((a, b) => a - b);
  return {
    agg,
    points,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
    max: times[times.length - 1],
    clientCpuMs,
    serverCpuMs,
  };
}

interface StreamResult {
  rows: number;
  rate: number;
  csvBytes: number;
  rssBeforeMiB: number;
  rssPeakMiB: number;
}

async function streamCsv(store: HistoryStore): Promise<StreamResult> {
  (globalThis as { gc?: () => void }).gc?.();
  const rssBefore = process.memoryUsage.rss();
  let peak = rssBefore;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, RSS_SAMPLE_MS);
  let rows = 0;
  let csvBytes = 0;
  const start = performance.now();
  try {
    // The CSV is built line by line as the service's export would write it; the bytes are counted, not kept.
    for await (const p of store.stream({
      uid: STREAM_UID,
      resource: STREAM_RESOURCE,
      from: 0,
      to: Number.MAX_SAFE_INTEGER,
    })) {
      const line = `${new Date(p.at).toISOString()},${typeof p.value === 'string' ? p.value : JSON.stringify(p.value)}\n`;
      csvBytes += line.length;
      rows++;
    }
  } finally {
    clearInterval(sampler);
  }
  peak = Math.max(peak, process.memoryUsage.rss());
  const ms = performance.now() - start;
  return { rows, rate: (rows * 1000) / ms, csvBytes, rssBeforeMiB: rssBefore / 2 ** 20, rssPeakMiB: peak / 2 ** 20 };
}

interface StoreReport {
  kind: string;
  ingest: IngestResult;
  queries: QueryResult[];
  stream: StreamResult;
  bytesPerValue: number;
  inserts?: { method: string; rate: number }[];
  queriesAfterVacuum?: QueryResult[];
}

async function measure(
  store: HistoryStore,
  l: Layout,
  serverCpu: CpuClock,
): Promise<Omit<StoreReport, 'kind' | 'inserts'>> {
  await store.open();
  const ingested = await ingest(store, l, store.kind);
  const stats = await store.stats();
  console.log(
    `  ${store.kind}: ${stats.values.toLocaleString('en')} values, ${(stats.bytes / 2 ** 20).toFixed(0)} MiB`,
  );
  const results: QueryResult[] = [];
  for (const agg of ['avg', 'last'] as const) results.push(await queries(store, l, agg, serverCpu));
  const stream = await streamCsv(store);
  return { ingest: ingested, queries: results, stream, bytesPerValue: stats.bytes / stats.values };
}

async function benchPostgres(l: Layout): Promise<StoreReport> {
  const cluster = await startPostgresCluster({ settings: PG_SETTINGS });
  try {
    const inserts: { method: string; rate: number }[] = [];
    if (COMPARE_ROWS > 0) {
      const compareLayout: Layout = { series: 20, seconds: Math.ceil(COMPARE_ROWS / 20), streamRows: 0 };
      for (const method of ['unnest', 'values'] as const) {
        const store = await postgresStoreOn(cluster, { insertMethod: method });
        await store.open();
        let values = 0;
        const start = performance.now();
        for (const batch of batches(compareLayout)) {
          await store.insert(batch, []);
          values += batch.length;
        }
        const rate = (values * 1000) / (performance.now() - start);
        console.log(
          `  postgres insert via ${method}: ${Math.round(rate).toLocaleString('en')} values/s (${values.toLocaleString('en')} values)`,
        );
        inserts.push({ method, rate });
        await store.close();
      }
    }
    const url = cluster.url(await createDatabase(cluster));
    const store = new PostgresHistoryStore({ url });
    try {
      const serverCpu = (): number => serverTreeCpuMs(cluster.pid);
      const report: StoreReport = { kind: 'postgres', inserts, ...(await measure(store, l, serverCpu)) };
      // Right after a fast fill, autovacuum has usually not yet set the visibility map of the newest pages, so
      // bucket queries read the table instead of the index alone. The same queries again once it has:
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        const { rows } = await admin.query(
          "SELECT n_ins_since_vacuum, autovacuum_count FROM pg_stat_user_tables WHERE relname = 'history_values'",
        );
        console.log(`  postgres before VACUUM: ${JSON.stringify(rows[0])}`);
        const t = performance.now();
        await admin.query('VACUUM (ANALYZE) history_values');
        console.log(`  postgres: VACUUM (ANALYZE) took ${fmt((performance.now() - t) / 1000, 1)} s`);
      } finally {
        await admin.end();
      }
      report.queriesAfterVacuum = [];
      for (const agg of ['avg', 'last'] as const) {
        report.queriesAfterVacuum.push(await queries(store, l, agg, serverCpu));
      }
      return report;
    } finally {
      await store.close();
    }
  } finally {
    await cluster.stop();
  }
}

async function benchSqlite(l: Layout): Promise<StoreReport | string> {
  const factory = await loadSqlite();
  if (typeof factory === 'string') return factory;
  const dir = await mkdtemp(join(tmpdir(), 'bench-history-sqlite-'));
  const store = factory(dir);
  try {
    return { kind: 'sqlite', ...(await measure(store, l, () => 0)) };
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** p50 / p99 / max wall ms, then mean CPU ms per query (this process + the server) and the points returned. */
function queryCell(x: QueryResult): string {
  const cpu = `cpu ${fmt(x.clientCpuMs, 1)} + ${fmt(x.serverCpuMs, 1)}`;
  return `${fmt(x.p50, 1)} / ${fmt(x.p99, 1)} / ${fmt(x.max, 1)} (${cpu}; ${x.points} pts)`;
}

async function main(): Promise<void> {
  const l = layout();
  console.log(
    `bench:history: ${fmt(l.series * l.seconds + l.streamRows)} values (${l.series} series × ${fmt(l.seconds)} s at 1 Hz + ${fmt(STREAM_ROWS)} at 10 Hz), ` +
      `batches of ${fmt(BATCH)}, ${QUERIES} queries, load average ${loadavg()[0].toFixed(2)}`,
  );
  const reports: StoreReport[] = [];
  for (const kind of STORES) {
    console.log(`\n${kind}`);
    const report =
      kind === 'postgres' ? await benchPostgres(l) : kind === 'sqlite' ? await benchSqlite(l) : `unknown store ${kind}`;
    if (typeof report === 'string') console.log(`  ${kind}: skipped (${report})`);
    else reports.push(report);
  }
  console.log(`\nload average after: ${loadavg()[0].toFixed(2)}\n`);
  console.log(
    '| store | ingest values/s (first / last tenth) | query p50 / p99 / max ms (avg) | (last) | stream rows/s | RSS before / peak MiB | bytes/value |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const r of reports) {
    const q = (agg: Aggregate): string => {
      const x = r.queries.find((y) => y.agg === agg);
      return x === undefined ? '-' : queryCell(x);
    };
    console.log(
      `| ${r.kind} | ${fmt(r.ingest.rate)} (${fmt(r.ingest.firstTenthRate)} / ${fmt(r.ingest.lastTenthRate)}) | ${q('avg')} | ${q('last')} | ` +
        `${fmt(r.stream.rate)} | ${fmt(r.stream.rssBeforeMiB)} / ${fmt(r.stream.rssPeakMiB)} | ${fmt(r.bytesPerValue, 1)} |`,
    );
    for (const x of r.queriesAfterVacuum ?? []) {
      console.log(`  ${r.kind} after VACUUM, ${x.agg}: ${queryCell(x)}`);
    }
    for (const i of r.inserts ?? []) console.log(`  ${r.kind} insert method ${i.method}: ${fmt(i.rate)} values/s`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
