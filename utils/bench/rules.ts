// bench:rules — 10,000 node events per second through 100 rules in the rules service (real worker threads, the
// in-process bus): each event matches one rule, which writes to the node. Measured: the added latency from the
// moment an event goes on the bus (where a broker publishes it) to the moment the rule's write request reaches
// the gateway's write subject (`myc.write.<gateway>`), its p50/p99; the process CPU per event (the service,
// its workers and this script's publishing, which is small); then the same with one rule that loops forever on
// its events (stopped at its 100 ms limit each time and restarted) to show its effect on the others' p99.
// Usage: npm run bench:rules [-- --seconds 10 --rate 10000 --threads 2 (0: a thread per rule) --no-looper | --looper-only]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBus } from '../../services/bus/memory-bus.ts';
import { subjects } from '../../services/bus/subjects.ts';
import { silentLogger } from '../../services/common/log.ts';
import { RulesService } from '../../services/rules/service.ts';
import { percentile } from './proc.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
// Events are published in a burst every --tick-ms, paced by elapsed time: by default 1 ms, 10 events, a steady
// stream. --tick-ms 10 puts 100 events in one burst, whose first waits for the other 99 to be handled on the
// service's thread (the in-process bus delivers synchronously): p99 about 3 ms higher.
const TICK_MS = arg('tick-ms', 1);
const SECONDS = arg('seconds', 10);
const RATE = arg('rate', 10_000);
/** Threads the rules share (the service's default: one per core); 0: a thread per rule, as before the pool. */
const THREADS = arg('threads', availableParallelism());
const CASES = process.argv.includes('--no-looper')
  ? [false]
  : process.argv.includes('--looper-only')
    ? [true]
    : [false, true];
const RULES = 100;
const NODES = 1000;
const GATEWAY = 'bench-gw';
const WARMUP_S = 2;

interface Result {
  sent: number;
  written: number;
  p50: number;
  p99: number;
  max: number;
  cpuUsPerEvent: number;
  looperKills?: number;
  /** Threads started again after a crash or a limit, summed over the rules (a restarted shared thread counts once per rule in it). */
  restarts: number;
  /** Failed runs of the rules other than the looper, and the last reason given. */
  othersFailed: number;
  othersLastError?: string;
}

async function run(withLooper: boolean): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-rules-'));
  const stateDir = mkdtempSync(join(tmpdir(), 'bench-rules-state-'));
  for (let k = 0; k < RULES; k++) {
    writeFileSync(
      join(dir, `r${k}.js`),
      `export default { name: 'r${k}', on: { update: { node: 'n-*', resource: 'r${k}' } },
         async run(e, ctx) { await ctx.write(e.uid, 'led', e.value); } };`,
    );
  }
  if (withLooper) {
    writeFileSync(
      join(dir, 'looper.js'),
      `export default { name: 'looper', on: { update: { node: '*', resource: 'loop' } }, run() { for (;;) {} } };`,
    );
  }
  const bus = new MemoryBus();
  await bus.start();
  const service = new RulesService(
    {
      dir,
      stateDir,
      id: 'bench',
      gatewayId: 'rules',
      limits: {
        timeLimitMs: 100,
        maxTimeLimitMs: 100,
        memoryMb: 64,
        maxWaitMs: 30_000,
        loadTimeoutMs: 30_000,
        concurrency: 64,
        maxQueued: 100_000,
        threads: THREADS,
      },
      // The looper must keep looping for the whole run, not be disabled after a few failures.
      maxFailures: Number.MAX_SAFE_INTEGER,
      httpAllow: [],
      httpTimeoutMs: 1000,
      writeTimeoutMs: 5000,
      historyTimeoutMs: 1000,
      execAs: { sub: 'bench', role: 'operator' },
      stateSyncMs: 0,
      heartbeatMs: 1000,
      reloadDebounceMs: 100,
      maxVirtualNodes: 10,
      recentRuns: 5,
    },
    { bus, log: silentLogger() },
  );
  await service.start();
  const events = subjects.events('bench-broker');
  const enc = (o: object) => Buffer.from(JSON.stringify(o));
  const now = Date.now();
  for (let i = 0; i < NODES; i++) {
    bus.publish(events, enc({ type: 'new', uid: `n-${i}`, gateway: GATEWAY, status: 'online', lastSeen: now }));
  }
  // The gateway: answers every write at once and notes when it arrived.
  const sentAt = new Map<number, number>();
  const latencies: number[] = [];
  let measuring = false;
  let written = 0;
  bus.subscribe(subjects.write(GATEWAY), (msg) => {
    const t = performance.now();
    const req = JSON.parse(Buffer.from(msg.data).toString()) as { payload: number };
    const at = sentAt.get(req.payload);
    if (at !== undefined) {
      sentAt.delete(req.payload);
      if (measuring) {
        latencies.push(t - at);
        written++;
      }
    }
    if (msg.reply) bus.publish(msg.reply, Buffer.from('{"result":"ok"}'));
  });
  // Every rule's worker loaded and warm before the clock starts.
  const tick = TICK_MS;
  const perTick = Math.round((RATE * tick) / 1000);
  let seq = 0;
  let sent = 0;
  let cpu0 = process.cpuUsage();
  const total = (WARMUP_S + SECONDS) * 1000;
  const started = performance.now();
  let looperEvents = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - started;
      if (!measuring && elapsed >= WARMUP_S * 1000) {
        measuring = true;
        cpu0 = process.cpuUsage();
        sent = 0;
      }
      if (elapsed >= total) {
        clearInterval(timer);
        resolve();
        return;
      }
      // Paced by elapsed time, so a late tick catches up instead of lowering the rate.
      const due = Math.floor((elapsed / 1000) * RATE) - seq;
      const n = Math.max(0, Math.min(due, perTick * 5));
      for (let i = 0; i < n; i++) {
        const s = seq++;
        sentAt.set(s, performance.now());
        bus.publish(events, enc({ type: 'update', uid: `n-${s % NODES}`, endpoint: `r${s % RULES}`, data: s }));
        if (measuring) sent++;
      }
      // Ten events a second for the looper: each runs into its limit and costs a worker restart.
      if (withLooper && Math.floor(elapsed / 100) > looperEvents) {
        looperEvents++;
        bus.publish(events, enc({ type: 'update', uid: 'n-0', endpoint: 'loop', data: 0 }));
      }
    }, tick);
  });
  const cpu = process.cpuUsage(cpu0);
  // Let the last writes arrive.
  const deadline = Date.now() + 5000;
  while (sentAt.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const records = service.records();
  const looper = records.find((r) => r.name === 'looper');
  await service.stop();
  await bus.stop();
  rmSync(dir, { recursive: true, force: true });
  rmSync(stateDir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const result: Result = {
    sent,
    written,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.at(-1) ?? Number.NaN,
    cpuUsPerEvent: (cpu.user + cpu.system) / Math.max(1, sent),
    restarts: records.reduce((n, r) => n + r.restarts, 0),
    othersFailed: 0,
  };
  for (const r of records) {
    if (r.name === 'looper') continue;
    result.othersFailed += r.errors;
    if (r.lastError !== undefined) result.othersLastError = r.lastError.message;
  }
  if (looper !== undefined) result.looperKills = looper.errors;
  return result;
}

const fmt = (r: Result) =>
  `sent ${r.sent}, writes ${r.written}; added latency p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms; process CPU ${r.cpuUsPerEvent.toFixed(1)} µs/event${r.looperKills === undefined ? '' : `; looper stopped ${r.looperKills} times`}; thread restarts seen by rules ${r.restarts}; other rules' failed runs ${r.othersFailed}${r.othersLastError === undefined ? '' : ` (last: ${r.othersLastError})`}`;

console.log(
  `# bench:rules: ${RATE} events/s for ${SECONDS} s (after ${WARMUP_S} s warm-up), ${RULES} rules, ${NODES} nodes, in-process bus, ${THREADS === 0 ? 'a thread per rule' : `${THREADS} shared threads`}`,
);
console.log('# the machine is shared with other agents: figures vary with their load');
for (const withLooper of CASES) {
  const r = await run(withLooper);
  console.log(`${withLooper ? '100 rules + 1 looping' : '100 rules:           '}: ${fmt(r)}`);
}
