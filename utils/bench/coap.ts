// npm run bench:coap -- [N] — N simulated RIOT nodes on one CoAP gateway.
// Broker and gateway run as separate processes (CPU and RSS read from /proc); load generators are child
// processes (utils/bench/coap-load.ts), each with up to --per-loader UDP sockets from its own 127.0.0.x address.
// Each simulated node is one UDP socket, as on a real network: the gateway matches value posts by source
// address and port, so sharing sockets between "nodes" would not be honest.
// Phases: ramp (first beacons spread over --ramp-s), discovery (each node answers GET /.well-known/core,
// /name, /temperature), steady state (beacon every --beacon-s, one value post every --value-s; measured for
// --seconds), liveness (--stop-fraction of the nodes fall silent; their `out`s are timed against their last
// beacon, and any `out` of a node still beaconing counts as false).
// Usage: npm run bench:coap -- 20000 [--beacon-s 30] [--value-s 5] [--max-time 60] [--seconds 60]
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { readPrivateKey, writeKeyPair } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';
import type { LoadConfig, LoadMessage, ParentMessage } from './coap-load.ts';
import { cpuMs, memoryKiB, stopProcess, waitForPort } from './proc.ts';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'beacon-s': { type: 'string', default: '30' },
    'value-s': { type: 'string', default: '5' },
    'max-time': { type: 'string', default: '60' },
    'check-ms': { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '60' },
    'ramp-s': { type: 'string', default: '10' },
    'per-loader': { type: 'string', default: '5000' },
    'stop-fraction': { type: 'string', default: '0.1' },
    'dedup-bytes': { type: 'string' },
    /** Node.js flags for the gateway process only, space-separated, e.g. "--trace-gc --max-semi-space-size=32". */
    'gateway-node-args': { type: 'string' },
  },
});
const N = Number(positionals[0] ?? 10_000);
const BEACON_MS = Number(opts['beacon-s']) * 1000;
const VALUE_MS = Number(opts['value-s']) * 1000;
const MAX_TIME_S = Number(opts['max-time']);
const CHECK_MS = Number(opts['check-ms']);
const SECONDS = Number(opts.seconds);
const RAMP_MS = Number(opts['ramp-s']) * 1000;
const PER_LOADER = Number(opts['per-loader']);
const STOP_FRACTION = Number(opts['stop-fraction']);
const ROOT = new URL('../..', import.meta.url).pathname;
const MYCELIUM = join(ROOT, 'bin/mycelium.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freeTcpPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function service(args: string[], logFile: string, nodeArgs: string[] = []): ChildProcess {
  const fd = openSync(logFile, 'w');
  return spawn(process.execPath, [...nodeArgs, MYCELIUM, ...args], { stdio: ['ignore', fd, fd] });
}

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** Datagrams the kernel dropped because a UDP receive buffer was full (all sockets, IPv4 and IPv6). */
function udpRcvbufErrors(): number {
  let total = 0;
  const snmp = readFileSync('/proc/net/snmp', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('Udp:'));
  if (snmp.length === 2) {
    const names = snmp[0].split(/\s+/);
    total += Number(snmp[1].split(/\s+/)[names.indexOf('RcvbufErrors')] ?? 0);
  }
  const v6 = /^Udp6RcvbufErrors\s+(\d+)/m.exec(readFileSync('/proc/net/snmp6', 'utf8'));
  return total + Number(v6?.[1] ?? 0);
}

/** Longest gateway event-loop stall seen by any scrape since the last reset (the gauge resets per scrape). */
let loopMaxSeen = 0;
function takeLoopMax(): number {
  const v = loopMaxSeen;
  loopMaxSeen = 0;
  return v;
}

async function gatewayMetrics(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const sp = line.lastIndexOf(' ');
    out[line.slice(0, sp).replace('mycelium_coap_', '')] = Number(line.slice(sp + 1));
  }
  loopMaxSeen = Math.max(loopMaxSeen, out.event_loop_delay_max_seconds ?? 0);
  return out;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'myc-coapbench-'));
  const keyFile = join(dir, 'key.pem');
  writeKeyPair(keyFile);
  const brokerPort = await freeTcpPort();
  const httpPort = await freeTcpPort();
  const coapPort = 20000 + Math.floor(Math.random() * 20000);
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
  console.error(`logs in ${dir}`);
  try {
    const broker = service(
      ['broker', '--port', String(brokerPort), '--host', '127.0.0.1', '--key-file', keyFile, '--log-level', 'warn'],
      join(dir, 'broker.log'),
    );
    children.push(broker);
    await waitForPort(brokerPort);
    const gateway = service(
      [
        'coap-gateway',
        '--coap-port',
        String(coapPort),
        '--broker-url',
        `ws://127.0.0.1:${brokerPort}`,
        '--key-file',
        keyFile,
        '--gateway-id',
        'bench',
        '--max-time',
        String(MAX_TIME_S),
        '--check-interval-ms',
        String(CHECK_MS),
        '--http-port',
        String(httpPort),
        // The bench reads the counters itself, on loopback.
        '--public-metrics',
        // Thousands of simulated nodes share each loader's source address: no per-address limits here.
        '--new-nodes-per-minute',
        '10000000',
        '--discoveries-per-minute',
        '10000000',
        '--log-level',
        'warn',
        ...(opts['dedup-bytes'] ? ['--dedup-cache-bytes', opts['dedup-bytes']] : []),
      ],
      join(dir, 'gateway.log'),
      opts['gateway-node-args']?.split(' ').filter(Boolean),
    );
    children.push(gateway);
    await waitForPort(httpPort);
    const gwPid = gateway.pid!;
    const rssBase = memoryKiB(gwPid).rss;

    // A web client counts `new`s and records every `out` with its arrival time.
    const key = readPrivateKey(keyFile);
    const client = new WebSocket(`ws://127.0.0.1:${brokerPort}/ws`, {
      headers: { authorization: `Bearer ${await mintToken(key, { role: 'viewer', sub: 'bench', ttlSeconds: 7200 })}` },
      perMessageDeflate: false,
    });
    await new Promise((r, j) => client.once('open', r).once('error', j));
    let seen = 0;
    const outs = new Map<string, { at: number; reason: string }>();
    client.on('message', (raw) => {
      const text = raw.toString();
      if (text.startsWith('{"type":"new"')) seen++;
      else if (text.startsWith('{"type":"out"')) {
        const f = JSON.parse(text) as { uid: string; reason: string };
        outs.set(f.uid, { at: Date.now(), reason: f.reason });
      }
    });
    client.send(JSON.stringify({ type: 'new', data: 'client' }));

    // Ramp: first beacons; each new node is discovered by the gateway (3 GETs answered by the loaders).
    const loaderCount = Math.ceil(N / PER_LOADER);
    const stats = new Map<ChildProcess, Extract<LoadMessage, { type: 'stats' }>>();
    const stopped: Array<[string, number]> = [];
    let stopReports = 0;
    const ready: Promise<void>[] = [];
    const load0 = loadavg()[0];
    const rcv0 = udpRcvbufErrors();
    const rampStart = Date.now();
    const cpu0 = cpuMs(gwPid);
    for (let i = 0; i < loaderCount; i++) {
      const cfg: LoadConfig = {
        gatewayHost: '127.0.0.1',
        gatewayPort: coapPort,
        localAddress: `127.0.0.${2 + i}`,
        count: Math.min(PER_LOADER, N - i * PER_LOADER),
        prefix: 'b',
        first: i * PER_LOADER,
        beaconMs: BEACON_MS,
        valueMs: VALUE_MS,
        rampMs: RAMP_MS,
      };
      const child = fork(join(ROOT, 'utils/bench/coap-load.ts'), [JSON.stringify(cfg)], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      loaders.push(child);
      ready.push(
        new Promise((resolve) => {
          child.on('message', (m: LoadMessage) => {
            if (m.type === 'ready') resolve();
            else if (m.type === 'stats') stats.set(child, m);
            else if (m.type === 'stopped') {
              stopped.push(...m.nodes);
              stopReports++;
            }
          });
        }),
      );
    }
    await Promise.all(ready);
    const tell = (m: ParentMessage) => {
      for (const l of loaders) l.send(m);
    };
    const collect = async () => {
      stats.clear();
      tell({ type: 'stats' });
      await until(() => stats.size === loaders.length, 'loader stats', 10_000);
      const sum = { beacons: 0, values: 0, acked: 0, errors: 0, served: 0 };
      for (const s of stats.values()) {
        sum.beacons += s.beacons;
        sum.values += s.values;
        sum.acked += s.acked;
        sum.errors += s.errors;
        sum.served += s.served;
      }
      return sum;
    };
    await until(() => seen >= N, `${N} nodes at the broker (seen ${seen})`, RAMP_MS + 120_000);
    const appearMs = Date.now() - rampStart;
    await until(
      async () => {
        const m = await gatewayMetrics(httpPort);
        return (m['discovery_total{result="ok"}'] ?? 0) + (m['discovery_total{result="timeout"}'] ?? 0) >= N;
      },
      'all discoveries',
      300_000,
    );
    const discoveredMs = Date.now() - rampStart;
    const rampCpuMs = cpuMs(gwPid) - cpu0;
    const rssDiscovered = memoryKiB(gwPid).rss;
    const afterRamp = await gatewayMetrics(httpPort);
    const rcvRamp = udpRcvbufErrors();
    const loopMaxRamp = takeLoopMax();

    // Steady state: values start; one value period of warm-up, then measure.
    tell({ type: 'values' });
    await sleep(VALUE_MS);
    const m0 = await gatewayMetrics(httpPort);
    const rcvSteady0 = udpRcvbufErrors();
    takeLoopMax();
    const c0 = cpuMs(gwPid);
    const b0 = cpuMs(broker.pid!);
    const lc0 = loaders.reduce((a, l) => a + cpuMs(l.pid!), 0);
    const t0 = Date.now();
    let rssPeak = 0;
    while (Date.now() - t0 < SECONDS * 1000) {
      await sleep(1000);
      rssPeak = Math.max(rssPeak, memoryKiB(gwPid).rss);
      await gatewayMetrics(httpPort);
    }
    const elapsed = Date.now() - t0;
    const m1 = await gatewayMetrics(httpPort);
    const rcvSteady1 = udpRcvbufErrors();
    const loopMaxSteady = takeLoopMax();
    const gwCpuPct = ((cpuMs(gwPid) - c0) / elapsed) * 100;
    const brCpuPct = ((cpuMs(broker.pid!) - b0) / elapsed) * 100;
    const loadCpuPct = ((loaders.reduce((a, l) => a + cpuMs(l.pid!), 0) - lc0) / elapsed) * 100;
    const rssSteady = memoryKiB(gwPid).rss;
    const falseOutsSteady = outs.size;

    // Liveness: a fraction of the nodes fall silent.
    tell({ type: 'stop', fraction: STOP_FRACTION });
    await until(() => stopReports === loaders.length, 'stop reports', 10_000);
    const stoppedSet = new Map(stopped);
    const stopAt = Date.now();
    const limitMs = MAX_TIME_S * 1000 + CHECK_MS;
    // The gateway decides within limitMs; the `out` then crosses the broker to this client.
    const deliverySlackMs = 250;
    await until(
      () => [...stoppedSet.keys()].every((uid) => outs.has(uid)),
      'outs of stopped nodes',
      limitMs + 30_000,
    ).catch((err) => console.error(String(err)));
    await sleep(2 * CHECK_MS);
    const lateness: number[] = [];
    let falseOuts = 0;
    for (const [uid, o] of outs) {
      const last = stoppedSet.get(uid);
      if (last === undefined) falseOuts++;
      else lateness.push(o.at - last);
    }
    lateness.sort((a, b) => a - b);
    tell({ type: 'halt' });
    await sleep(2000);
    const mEnd = await gatewayMetrics(httpPort);
    const lEnd = await collect();

    const posts = (m: Record<string, number>) => (m.values_total ?? 0) + (m.beacons_total ?? 0);
    const report = {
      date: new Date().toISOString(),
      nodes: N,
      // Other work on the machine skews CPU figures and causes stalls: the 1-minute load average at start and end.
      loadAverageAtStart: load0,
      loadAverageAtEnd: loadavg()[0],
      loaders: loaderCount,
      beaconSeconds: BEACON_MS / 1000,
      valueSeconds: VALUE_MS / 1000,
      maxTimeSeconds: MAX_TIME_S,
      checkIntervalMs: CHECK_MS,
      rampSeconds: RAMP_MS / 1000,
      allNodesAtBrokerSeconds: appearMs / 1000,
      allDiscoveredSeconds: discoveredMs / 1000,
      discoveryTimeouts: afterRamp['discovery_total{result="timeout"}'] ?? 0,
      gatewayCpuMsPerNodeDuringRamp: rampCpuMs / N,
      measuredSeconds: elapsed / 1000,
      postsHandledPerSecond: ((posts(m1) - posts(m0)) / elapsed) * 1000,
      valuePostsPerSecond: (((m1.values_total ?? 0) - (m0.values_total ?? 0)) / elapsed) * 1000,
      // Whole run, after every loader fell silent: posts sent, posts the gateway accepted, posts acknowledged.
      postsSentTotal: lEnd.beacons + lEnd.values,
      postsAcceptedByGatewayTotal: posts(mEnd),
      postsUnacknowledgedTotal: lEnd.beacons + lEnd.values - lEnd.acked,
      kernelUdpRcvbufDropsRamp: rcvRamp - rcv0,
      kernelUdpRcvbufDropsSteady: rcvSteady1 - rcvSteady0,
      kernelUdpRcvbufDropsTotal: udpRcvbufErrors() - rcv0,
      gatewayEventLoopDelayMaxRampMs: loopMaxRamp * 1000,
      gatewayEventLoopDelayMaxSteadyMs: loopMaxSteady * 1000,
      loaderSocketErrors: lEnd.errors,
      gatewayCpuPercent: gwCpuPct,
      brokerCpuPercent: brCpuPct,
      loadGeneratorsCpuPercent: loadCpuPct,
      gatewayRssBaseMiB: rssBase / 1024,
      gatewayRssDiscoveredMiB: rssDiscovered / 1024,
      gatewayRssSteadyMiB: rssSteady / 1024,
      gatewayRssPeakSteadyMiB: rssPeak / 1024,
      gatewayRssPerNodeKiB: (rssSteady - rssBase) / N,
      badRequests: Object.entries(mEnd)
        .filter(([k]) => k.startsWith('bad_requests_total') || k === 'unknown_sender_total')
        .reduce((a, [, v]) => a + v, 0),
      falseOutsWhileBeaconing: falseOutsSteady + falseOuts,
      stoppedNodes: stoppedSet.size,
      stoppedNodesOut: lateness.length,
      outAfterLastPostMinS: lateness[0] / 1000,
      outAfterLastPostMaxS: lateness[lateness.length - 1] / 1000,
      outLimitS: limitMs / 1000,
      allOutsWithinLimit:
        lateness.length === stoppedSet.size && lateness.every((ms) => ms <= limitMs + deliverySlackMs),
      deliverySlackS: deliverySlackMs / 1000,
      secondsFromStopToLastOut: outs.size > 0 ? (Math.max(...[...outs.values()].map((o) => o.at)) - stopAt) / 1000 : 0,
      stopAt: new Date(stopAt).toISOString(),
    };
    console.log(JSON.stringify(report, null, 2));
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
