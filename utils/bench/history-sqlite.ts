// The embedded history store's ingestion, measured two ways (H3b's `npm run bench:history` compares stores):
//   (a) the store alone: batches of --batch value rows, one transaction each, into a fresh SQLite file;
//   (b) the service end to end on the in-process bus: `update` events published as the broker publishes them,
//       timed until the service has stored them all (parse, minInterval check, batch, transaction).
// Then bytes per stored value: the file size after close (the WAL checkpointed) over the rows.
// Usage: node --import tsx utils/bench/history-sqlite.ts [--values 200000 --batch 500 --reps 3]
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createBus } from '../../services/bus/index.ts';
import { subjects } from '../../services/bus/subjects.ts';
import { silentLogger } from '../../services/common/log.ts';
import { HistoryService } from '../../services/history/service.ts';
import { SqliteHistoryStore } from '../../services/history/store-sqlite.ts';
import type { ValueRow } from '../../services/history/store.ts';

const { values: args } = parseArgs({
  options: {
    values: { type: 'string', default: '200000' },
    batch: { type: 'string', default: '500' },
    reps: { type: 'string', default: '3' },
  },
});
const n = Number(args.values);
const batch = Number(args.batch);
const reps = Number(args.reps);
const dir = mkdtempSync(join(tmpdir(), 'myc-bench-history-'));
/** 100 nodes with 5 resources each; values alternate numbers and short text, as sensors and switches do. */
const uidOf = (i: number) => `node-${i % 100}`;
const resourceOf = (i: number) => ['temperature', 'pressure', 'humidity', 'led', 'status'][Math.floor(i / 100) % 5];
const sampleValue = (i: number) => (i % 5 === 3 ? (i % 2 ? 'on' : 'off') : Math.round(Math.sin(i) * 1000) / 10);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Run {
  rate: number;
  /** Process CPU time (user + system) per value: what the rate would be on an idle core. */
  cpuMicros: number;
}

const cpuNow = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function storeAlone(rep: number): Promise<Run & { bytesPerValue: number }> {
  const path = join(dir, `store-${rep}.db`);
  const store = new SqliteHistoryStore({ path });
  await store.open();
  const t0 = Date.now() - n;
  const cpu0 = cpuNow();
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i += batch) {
    const rows: ValueRow[] = [];
    for (let j = i; j < Math.min(n, i + batch); j++) {
      rows.push({ at: t0 + j, uid: uidOf(j), resource: resourceOf(j), value: sampleValue(j), key: `BENCH:${j}` });
    }
    await store.insert(rows, []);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpuMicros = (cpuNow() - cpu0) / n;
  await store.close();
  return { rate: n / seconds, cpuMicros, bytesPerValue: statSync(path).size / n };
}

async function service(rep: number): Promise<Run> {
  const bus = createBus();
  await bus.start();
  const store = new SqliteHistoryStore({ path: join(dir, `service-${rep}.db`) });
  const history = new HistoryService(
    {
      retentionMs: 30 * 86_400_000,
      durable: 'history',
      batch,
      maxPending: n,
      ackWaitMs: 30_000,
      retryMs: 1_000,
      streamMaxAgeMs: 86_400_000,
      pruneIntervalMs: 3_600_000,
      pruneBudget: 5_000,
    },
    { bus, store, log: silentLogger() },
  );
  await history.start();
  const frames = Array.from({ length: n }, (_, i) =>
    Buffer.from(JSON.stringify({ type: 'update', uid: uidOf(i), endpoint: resourceOf(i), data: sampleValue(i) })),
  );
  const subject = subjects.events('bench');
  const cpu0 = cpuNow();
  const start = process.hrtime.bigint();
  // Published in slices so the consumer's pump runs between them, as it would under a live broker.
  for (let i = 0; i < n; i += batch) {
    for (let j = i; j < Math.min(n, i + batch); j++) bus.publish(subject, frames[j]);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  while (history.counts.values + history.dropped < n) await new Promise((r) => setTimeout(r, 5));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpuMicros = (cpuNow() - cpu0) / n;
  if (history.dropped > 0) console.log(`  (service run ${rep}: ${history.dropped} dropped)`);
  await history.stop();
  await bus.stop();
  return { rate: n / seconds, cpuMicros };
}

console.log(`# history SQLite ingestion: ${n} values, batches of ${batch}, ${reps} reps, medians`);
const alone: (Run & { bytesPerValue: number })[] = [];
const e2e: Run[] = [];
for (let rep = 0; rep < reps; rep++) {
  alone.push(await storeAlone(rep));
  e2e.push(await service(rep));
}
const line = (name: string, runs: Run[]) =>
  console.log(
    `${name.padEnd(28)}${Math.round(median(runs.map((r) => r.rate)))} values/s, ` +
      `${median(runs.map((r) => r.cpuMicros)).toFixed(1)} µs CPU per value`,
  );
line('store.insert alone:', alone);
line('service on in-process bus:', e2e);
console.log(`bytes per stored value:     ${median(alone.map((a) => a.bytesPerValue)).toFixed(1)} (file after close)`);
rmSync(dir, { recursive: true, force: true });
