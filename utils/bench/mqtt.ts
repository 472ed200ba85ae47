// npm run bench:mqtt — N simulated MQTT nodes on the gateway's embedded broker (token auth and ACL on, as in
// production), each publishing a temperature every --interval seconds with its send time as the value. A web
// client on the broker's /ws receives every update and measures end-to-end latency (node publish -> broker ->
// client). The Mycelium broker and the gateway (with its embedded aedes) are separate processes; the nodes live in
// load-generator processes of at most --per-worker sockets each, spread over several 127.0.0.x source addresses.
// Reported per N: gateway+embedded-broker CPU (% of one core) and RSS from /proc, the Mycelium broker's CPU,
// MQTT messages/s into the gateway, updates/s delivered to the client, latency p50/p99/max, and the CPU used by
// everything else on the machine meanwhile (the machine has two cores; other work there skews latency).
// Usage: npm run bench:mqtt [-- --nodes 1000,5000,10000 --interval 5 --seconds 20]
// BENCH_TRACE=1 prints every update slower than 50 ms with its time, to tell pauses from steady delay;
// BENCH_GATEWAY_NODE_OPTIONS passes Node flags to the gateway process (e.g. --trace-gc).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { readPrivateKey, writeKeyPair } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';
import { cpuMs, freePort, memoryKiB, percentile, stopProcess, waitForPort } from './proc.ts';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000,5000,10000' },
    interval: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '5' },
    'per-worker': { type: 'string', default: '5000' },
    'connect-rate': { type: 'string', default: '1000' },
  },
});
const NODE_COUNTS = (args.nodes as string).split(',').map(Number);
const INTERVAL_S = Number(args.interval);
const SECONDS = Number(args.seconds);
const WARMUP_MS = Number(args.warmup) * 1000;
const PER_WORKER = Number(args['per-worker']);
const CONNECT_RATE = Number(args['connect-rate']);
const CONNECT_TIMEOUT_MS = 120_000;
const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ
const ROOT = new URL('../..', import.meta.url).pathname;

/** Busy CPU time of the whole machine (all cores), in milliseconds. */
function machineBusyMs(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
  return (busy * 1000) / CLOCK_TICKS_PER_SECOND;
}

async function waitUntil(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const keyDir = mkdtempSync(join(tmpdir(), 'myc-bench-mqtt-'));
const keyFile = join(keyDir, 'key.pem');
writeKeyPair(keyFile);
const privateKey = readPrivateKey(keyFile);

function mycelium(argv: string[], nodeOptions: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeOptions, join(ROOT, 'bin/mycelium.js'), ...argv, '--log-level', 'warn'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}

interface Worker {
  child: ChildProcess;
  connected: number;
  refused: number;
  retries: number;
}

function startWorker(mqttPort: number, first: number, count: number, index: number): Worker {
  // Several source addresses per worker keep each one far from the ~28k ephemeral ports of one address.
  const addresses = [0, 1, 2].map((k) => `127.0.${index + 1}.${k + 2}`).join(',');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'utils/bench/mqtt-load.ts'),
      '--port',
      String(mqttPort),
      '--key-file',
      keyFile,
      '--first',
      String(first),
      '--count',
      String(count),
      '--interval',
      String(INTERVAL_S),
      '--connect-rate',
      String(Math.ceil(CONNECT_RATE / Math.ceil(count / PER_WORKER))),
      '--local-address',
      addresses,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const w: Worker = { child, connected: 0, refused: 0, retries: 0 };
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const msg = JSON.parse(line) as { connected?: number; refused?: number; retries?: number };
      if (typeof msg.connected === 'number') w.connected = msg.connected;
      if (typeof msg.retries === 'number') w.retries = msg.retries;
      if (typeof msg.refused === 'number') w.refused = msg.refused;
    } catch {
      // not a progress line
    }
  });
  return w;
}

async function metricsOf(httpPort: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

interface Result {
  nodes: number;
  gwCpuPct: number;
  gwRss: number;
  gwPeak: number;
  brokerCpuPct: number;
  mqttInPerS: number;
  updatesPerS: number;
  p50: number;
  p99: number;
  max: number;
  samples: number;
  /** Load generators and this process (the measuring client). */
  loadGenCpuPct: number;
  /** Everything else on the machine during the window: the contention the figures were taken under. */
  otherCpuPct: number;
}

function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function runCase(n: number): Promise<Result> {
  const [brokerPort, mqttPort, httpPort] = [await freePort(), await freePort(), await freePort()];
  const broker = mycelium(['broker', '--port', String(brokerPort), '--host', '127.0.0.1', '--key-file', keyFile]);
  await waitForPort(brokerPort, '127.0.0.1', 20_000);
  const gateway = mycelium(
    [
      'mqtt-gateway',
      '--broker-url',
      `ws://127.0.0.1:${brokerPort}`,
      '--key-file',
      keyFile,
      '--mqtt-port',
      String(mqttPort),
      '--mqtt-host',
      '127.0.0.1',
      '--http-port',
      String(httpPort),
      // The bench reads the counters itself, on loopback.
      '--public-metrics',
    ],
    (process.env.BENCH_GATEWAY_NODE_OPTIONS ?? '').split(' ').filter(Boolean),
  );
  const workers: Worker[] = [];
  let ws: WebSocket | undefined;
  try {
    await waitUntil(
      'gateway /healthz',
      async () => {
        try {
          const h = (await (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).json()) as { broker: string };
          return h.broker === 'connected';
        } catch {
          return false;
        }
      },
      20_000,
    );
    // The measuring web client.
    const token = await mintToken(privateKey, { role: 'viewer', sub: 'bench', ttlSeconds: 3600 });
    ws = new WebSocket(`ws://127.0.0.1:${brokerPort}/ws`, { headers: { authorization: `Bearer ${token}` } });
    await new Promise((resolve, reject) => {
      ws!.once('open', resolve);
      ws!.once('error', reject);
    });
    ws.send(JSON.stringify({ type: 'new', data: 'client' }));
    let measuring = false;
    let updates = 0;
    const latencies: number[] = [];
    ws.on('message', (data) => {
      if (!measuring) return;
      const f = JSON.parse(data.toString()) as { type: string; endpoint?: string; data?: unknown };
      if (f.type !== 'update' || f.endpoint !== 'temperature' || typeof f.data !== 'number') return;
      updates++;
      const l = performance.timeOrigin + performance.now() - f.data;
      latencies.push(l);
      if (process.env.BENCH_TRACE && l > 50)
        process.stderr.write(`slow ${l.toFixed(0)} at ${(performance.now() / 1000).toFixed(2)}\n`);
    });

    const t0 = Date.now();
    for (let first = 0, i = 0; first < n; first += PER_WORKER, i++) {
      workers.push(startWorker(mqttPort, first, Math.min(PER_WORKER, n - first), i));
    }
    const sum = (k: 'connected' | 'retries') => workers.reduce((s, w) => s + w[k], 0);
    await waitUntil(
      `${n} nodes connected`,
      () => {
        if (Date.now() - t0 > CONNECT_TIMEOUT_MS - 300) {
          process.stderr.write(`  connected ${sum('connected')} of ${n}, ${sum('retries')} retries\n`);
        }
        const refused = workers.reduce((s, w) => s + w.refused, 0);
        if (refused > 0) throw new Error(`${refused} nodes refused`);
        return workers.reduce((s, w) => s + w.connected, 0) >= n;
      },
      CONNECT_TIMEOUT_MS,
    );
    await waitUntil(
      `${n} nodes at the gateway`,
      async () => (await metricsOf(httpPort)).get('mycelium_mqtt_nodes') === n,
      CONNECT_TIMEOUT_MS,
    );
    const connectS = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, WARMUP_MS));

    const m0 = await metricsOf(httpPort);
    const gw0 = cpuMs(gateway.pid!);
    const br0 = cpuMs(broker.pid!);
    const ours0 = workers.reduce((t, w) => t + cpuMs(w.child.pid!), 0) + selfCpuMs();
    const machine0 = machineBusyMs();
    const start = performance.now();
    measuring = true;
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    measuring = false;
    const elapsedS = (performance.now() - start) / 1000;
    const gw1 = cpuMs(gateway.pid!);
    const br1 = cpuMs(broker.pid!);
    const ours1 = workers.reduce((t, w) => t + cpuMs(w.child.pid!), 0) + selfCpuMs();
    const machine1 = machineBusyMs();
    const m1 = await metricsOf(httpPort);
    const mem = memoryKiB(gateway.pid!);
    const key = 'mycelium_mqtt_messages_total';
    latencies.sort((a, b) => a - b);
    const result: Result = {
      nodes: n,
      gwCpuPct: ((gw1 - gw0) / 10 / elapsedS) * 1,
      gwRss: mem.rss / 1024,
      gwPeak: mem.peak / 1024,
      brokerCpuPct: (br1 - br0) / 10 / elapsedS,
      mqttInPerS: ((m1.get(key) ?? 0) - (m0.get(key) ?? 0)) / elapsedS,
      updatesPerS: updates / elapsedS,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies[latencies.length - 1] ?? Number.NaN,
      samples: latencies.length,
      loadGenCpuPct: (ours1 - ours0) / 10 / elapsedS,
      otherCpuPct: (machine1 - machine0 - (ours1 - ours0) - (gw1 - gw0) - (br1 - br0)) / 10 / elapsedS,
    };
    process.stderr.write(
      `  N=${n}: all connected and discovered in ${connectS.toFixed(1)} s (${sum('retries')} connection retries)\n`,
    );
    return result;
  } finally {
    ws?.terminate();
    await Promise.all(workers.map((w) => stopProcess(w.child)));
    await stopProcess(gateway);
    await stopProcess(broker);
  }
}

function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

const results: Result[] = [];
process.stderr.write(
  `bench:mqtt — nodes ${NODE_COUNTS.join(', ')}, a value per node every ${INTERVAL_S} s, ${SECONDS} s measured\n`,
);
const loadBefore = loadAverage();
for (const n of NODE_COUNTS) results.push(await runCase(n));
// Other work on the machine shares its two cores; the load average says how much.
console.log(`\nload average before: ${loadBefore}; after: ${loadAverage()}`);

const f1 = (x: number) => x.toFixed(1);
console.log(
  '| nodes | gateway+aedes CPU (% of a core) | gateway RSS (MiB, peak) | broker CPU | MQTT msgs/s in | updates/s to client | p50 (ms) | p99 (ms) | max (ms) | load gen CPU | other processes CPU |',
);
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of results) {
  console.log(
    `| ${r.nodes} | ${f1(r.gwCpuPct)} % | ${f1(r.gwRss)} (${f1(r.gwPeak)}) | ${f1(r.brokerCpuPct)} % | ${f1(r.mqttInPerS)} | ${f1(r.updatesPerS)} | ${f1(r.p50)} | ${f1(r.p99)} | ${f1(r.max)} | ${f1(r.loadGenCpuPct)} % | ${f1(r.otherCpuPct)} % |`,
  );
}
process.exit(0);
