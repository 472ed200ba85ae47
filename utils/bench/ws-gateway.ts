// npm run bench:ws-gateway -- [N] — many WebSocket nodes on one ws-gateway.
// Broker and gateway run as separate processes (RSS and CPU read per process from /proc); load generators are
// child processes of their own (each under the 20,000-open-files limit, each from its own 127.0.0.x source
// address against port exhaustion). A /ws client on the broker measures node→client latency from the send
// time each update carries.
// Reported: connection rate, gateway RSS per connection, gateway and broker CPU %, latency p50/p99.
// Usage: npm run bench:ws-gateway -- 20000 [--workers 2] [--interval-ms 10000] [--seconds 30] [--anonymous]
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { readPrivateKey, writeKeyPair } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';
import { cpuMs, freePort, memoryKiB, percentile, stopProcess, waitForPort } from './proc.ts';
import type { LoaderMessage } from './ws-gateway-load.ts';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    workers: { type: 'string' },
    'interval-ms': { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '30' },
    'per-loader': { type: 'string', default: '17000' },
    concurrency: { type: 'string', default: '200' },
    anonymous: { type: 'boolean', default: false },
  },
});
const N = Number(positionals[0] ?? 10_000);
/** One gateway process may hold 20,000 files; 17k nodes leaves room for its own descriptors and reconnect churn. */
const PER_WORKER = 17_000;
const WORKERS = Number(opts.workers ?? Math.max(1, Math.ceil(N / PER_WORKER)));
const INTERVAL_MS = Number(opts['interval-ms']);
const SECONDS = Number(opts.seconds);
const PER_LOADER = Number(opts['per-loader']);
const CONCURRENCY = Number(opts.concurrency);
const ROOT = new URL('../..', import.meta.url).pathname;
const MYCELIUM = join(ROOT, 'bin/mycelium.js');
const ALL_NODES_TIMEOUT_MS = 120_000;

/** The process and its children (cluster workers), for summing RSS and CPU. */
function family(pid: number): number[] {
  const pids = [pid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) pids.push(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return pids;
}
const sumRssKiB = (pids: number[]) => pids.reduce((a, p) => a + memoryKiB(p).rss, 0);
const sumCpuMs = (pids: number[]) => pids.reduce((a, p) => a + cpuMs(p), 0);
/** Runs a mycelium command with its log (stdout and stderr) in `logFile`, so a crash can be read afterwards. */
function service(args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const fd = openSync(logFile, 'w');
  return spawn(process.execPath, [MYCELIUM, ...args], { stdio: ['ignore', fd, fd], env: { ...process.env, ...env } });
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function main(): Promise<void> {
  const keyDir = mkdtempSync(join(tmpdir(), 'myc-wsbench-'));
  const keyFile = join(keyDir, 'key.pem');
  writeKeyPair(keyFile);
  const brokerPort = await freePort();
  const gatewayPort = await freePort();
  const httpPort = await freePort();
  const children: ChildProcess[] = [];
  const loaders: ChildProcess[] = [];
  const cleanup = async () => {
    for (const l of loaders) l.kill('SIGKILL');
    for (const c of children.reverse()) await stopProcess(c);
  };
  process.on('SIGINT', () => {
    cleanup()
      .catch((err) => console.error(err))
      .finally(() => process.exit(130));
  });

  try {
    console.error(`logs in ${keyDir}`);
    const broker = service(
      ['broker', '--port', String(brokerPort), '--host', '127.0.0.1', '--key-file', keyFile, '--log-level', 'warn'],
      join(keyDir, 'broker.log'),
    );
    children.push(broker);
    await waitForPort(brokerPort);
    const gateway = service(
      [
        'ws-gateway',
        '--port',
        String(gatewayPort),
        '--host',
        '127.0.0.1',
        '--broker-url',
        `ws://127.0.0.1:${brokerPort}`,
        '--key-file',
        keyFile,
        '--gateway-id',
        'bench',
        '--workers',
        String(WORKERS),
        // /healthz on its own port (shared by the workers: it answers for the worker that takes the request).
        '--http-port',
        String(httpPort),
        '--log-level',
        'warn',
        // All bench nodes come from one loopback address: lift the per-address new-node rate for anonymous ones.
        ...(opts.anonymous ? ['--allow-anonymous-nodes', '--new-nodes-per-minute', '1000000'] : []),
      ],
      join(keyDir, 'gateway.log'),
      { MYCELIUM_HOME: keyDir },
    );
    children.push(gateway);
    await waitForPort(gatewayPort);
    await until(
      () => {
        try {
          return family(gateway.pid!).length >= (WORKERS > 1 ? WORKERS + 1 : 1);
        } catch {
          return false;
        }
      },
      'gateway workers',
      20_000,
    );
    await sleep(1500);
    const gwPids = family(gateway.pid!);
    const rssBase = sumRssKiB(gwPids);

    // The web client that measures latency, registered before the nodes arrive so it sees each `new`.
    const privateKey = readPrivateKey(keyFile);
    const client = new WebSocket(`ws://127.0.0.1:${brokerPort}/ws`, {
      headers: {
        authorization: `Bearer ${await mintToken(privateKey, { role: 'operator', sub: 'bench', ttlSeconds: 3600 })}`,
      },
      perMessageDeflate: false,
    });
    await new Promise((r, j) => client.once('open', r).once('error', j));
    let seen = 0;
    let measuring = false;
    const latencies: number[] = [];
    /** Worst latency per second of the measurement, to tell steady lag from spikes (and when they happen). */
    const worstPerSecond = new Map<number, number>();
    let measureStart = 0;
    client.on('message', (raw) => {
      const text = raw.toString();
      if (text.startsWith('{"type":"new"')) {
        seen++;
        return;
      }
      if (measuring && text.includes('"endpoint":"bench"')) {
        const f = JSON.parse(text) as { data: number };
        const now = performance.timeOrigin + performance.now();
        const lat = now - f.data;
        latencies.push(lat);
        const second = Math.floor((now - measureStart) / 1000);
        if (lat > (worstPerSecond.get(second) ?? 0)) worstPerSecond.set(second, lat);
      }
    });
    client.send(JSON.stringify({ type: 'new', data: 'client' }));

    // Ramp-up: every loader opens its share as fast as its handshake lanes allow.
    const loaderCount = Math.ceil(N / PER_LOADER);
    const ready: Promise<Extract<LoaderMessage, { type: 'ready' }>>[] = [];
    const rampStart = Date.now();
    const gwCpu0 = sumCpuMs(gwPids);
    for (let i = 0; i < loaderCount; i++) {
      const count = Math.min(PER_LOADER, N - i * PER_LOADER);
      const child = fork(
        join(ROOT, 'utils/bench/ws-gateway-load.ts'),
        [
          JSON.stringify({
            url: `ws://127.0.0.1:${gatewayPort}/node`,
            count,
            first: i * PER_LOADER,
            localAddress: `127.0.0.${2 + i}`,
            keyFile: opts.anonymous ? undefined : keyFile,
            intervalMs: INTERVAL_MS,
            concurrency: CONCURRENCY,
            prefix: 'n',
          }),
        ],
        { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
      );
      loaders.push(child);
      ready.push(
        new Promise((resolve) => {
          child.on('message', (m: LoaderMessage) => {
            if (m.type === 'ready') resolve(m);
          });
        }),
      );
    }
    const loaderPids = loaders.map((l) => l.pid!);
    const loaderCpu0 = sumCpuMs(loaderPids);
    const results = await Promise.all(ready);
    const rampMs = Date.now() - rampStart;
    const rampCpuMs = sumCpuMs(gwPids) - gwCpu0;
    const loaderRampCpuPct = ((sumCpuMs(loaderPids) - loaderCpu0) / rampMs) * 100;
    const open = results.reduce((a, r) => a + r.open, 0);
    const failed = results.reduce((a, r) => a + r.failed, 0);
    const errors: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    // Token minting happens in the loaders before their first connection; the per-loader `ms` excludes it.
    const connectMs = Math.max(...results.map((r) => r.ms));
    await until(() => seen >= open, `${open} nodes at the broker (seen ${seen})`, ALL_NODES_TIMEOUT_MS).catch((err) =>
      console.error(String(err)),
    );
    await sleep(2000);
    const rssConnected = sumRssKiB(gwPids);

    // Steady state: every node sends one update per interval; one interval of warm-up, then measure.
    for (const l of loaders) l.send({ type: 'run' });
    await sleep(INTERVAL_MS);
    measureStart = Date.now();
    measuring = true;
    const gw0 = sumCpuMs(gwPids);
    const br0 = cpuMs(broker.pid!);
    const ld0 = sumCpuMs(loaderPids);
    const t0 = Date.now();
    await sleep(SECONDS * 1000);
    const elapsed = Date.now() - t0;
    measuring = false;
    const gwCpuPct = ((sumCpuMs(gwPids) - gw0) / elapsed) * 100;
    const brCpuPct = ((cpuMs(broker.pid!) - br0) / elapsed) * 100;
    const ldCpuPct = ((sumCpuMs(loaderPids) - ld0) / elapsed) * 100;
    const rssSteady = sumRssKiB(gwPids);
    const brokerRss = memoryKiB(broker.pid!).rss;
    latencies.sort((a, b) => a - b);
    const health = (await (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).json()) as { nodes: number };

    const perConnKiB = (rssSteady - rssBase) / Math.max(1, open);
    const report = {
      date: new Date().toISOString(),
      // The machine may be shared with other benchmarks: latency and connection rate depend on it.
      loadAverage1m: Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]),
      nodes: N,
      open,
      failed,
      errors,
      gatewayWorkers: WORKERS,
      loaders: loaderCount,
      intervalMs: INTERVAL_MS,
      measuredSeconds: elapsed / 1000,
      connectSeconds: connectMs / 1000,
      connectionsPerSecond: Math.round(open / (connectMs / 1000)),
      rampWallSeconds: rampMs / 1000,
      gatewayCpuMsPerConnect: rampCpuMs / Math.max(1, open),
      gatewayCpuPercentDuringRamp: (rampCpuMs / rampMs) * 100,
      loaderCpuPercentDuringRamp: loaderRampCpuPct,
      seenAtBroker: seen,
      gatewayRssBaseMiB: rssBase / 1024,
      gatewayRssConnectedMiB: rssConnected / 1024,
      gatewayRssSteadyMiB: rssSteady / 1024,
      gatewayRssPerConnectionKiB: perConnKiB,
      gatewayRssPerConnectionKiBAfterRamp: (rssConnected - rssBase) / Math.max(1, open),
      gatewayRssTotalPerConnectionKiB: rssSteady / Math.max(1, open),
      gatewayCpuPercent: gwCpuPct,
      brokerCpuPercent: brCpuPct,
      brokerRssMiB: brokerRss / 1024,
      loaderCpuPercent: ldCpuPct,
      updatesPerSecond: open / (INTERVAL_MS / 1000),
      updatesReceivedPerSecond: latencies.length / (elapsed / 1000),
      latencySamples: latencies.length,
      latencyP50Ms: percentile(latencies, 50),
      latencyP99Ms: percentile(latencies, 99),
      latencyMaxMs: latencies[latencies.length - 1],
      gatewayHealthzNodes: health.nodes,
      secondsWithMaxOver100Ms: [...worstPerSecond.values()].filter((v) => v > 100).length,
      worstSeconds: [...worstPerSecond.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 5)
        .map(([sec, ms]) => `t+${sec}s: ${ms.toFixed(0)} ms`),
    };
    console.log(JSON.stringify(report, null, 2));
    console.log(
      `\nws-gateway: ${open}/${N} nodes (${failed} failed), ${WORKERS} gateway process(es)\n` +
        `  connection rate        ${report.connectionsPerSecond}/s (${report.connectSeconds.toFixed(1)} s; gateway ${report.gatewayCpuPercentDuringRamp.toFixed(0)} % CPU, load generators ${loaderRampCpuPct.toFixed(0)} %)\n` +
        `  gateway RSS            ${report.gatewayRssSteadyMiB.toFixed(0)} MiB, ${perConnKiB.toFixed(1)} KiB per connection above the idle process(es), ${report.gatewayRssTotalPerConnectionKiB.toFixed(1)} KiB all included\n` +
        `  gateway CPU            ${gwCpuPct.toFixed(1)} % of one core at ${report.updatesPerSecond} updates/s\n` +
        `  broker CPU / RSS       ${brCpuPct.toFixed(1)} % / ${report.brokerRssMiB.toFixed(0)} MiB\n` +
        `  latency node→client    p50 ${report.latencyP50Ms.toFixed(1)} ms, p99 ${report.latencyP99Ms.toFixed(1)} ms, max ${report.latencyMaxMs?.toFixed(1)} ms (${latencies.length} samples)`,
    );
    client.terminate();
    for (const l of loaders) l.send({ type: 'stop' });
    await sleep(500);
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
