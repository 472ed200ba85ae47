// The fan-out load used by bench:broker and bench:cluster: servers under test started as processes, gateway
// connections that push ~100-byte updates, and web clients that count and time what they receive.
import { type ChildProcess, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { readPrivateKey, writeKeyPair } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';
import { cpuMs, freePort, median, memoryKiB, percentile, spawnPinned, stopProcess, waitForPort } from './proc.ts';

export const WARMUP_MS = 1000;
export const NODES_PER_GATEWAY = 50;
const LATENCY_SAMPLE_CLIENTS = 10;
/** Closed loop: a gateway stops sending while its socket holds this much or clients lag this many messages. */
const MAX_GATEWAY_BUFFER = 256 * 1024;
const MAX_IN_FLIGHT = 4000;
const ROOT = new URL('../..', import.meta.url).pathname;

/**
 * `memory+history`: `mycelium up --services broker,history`, the broker and the history service in one process on
 * the in-process bus (SQLite in a temporary directory); `nats+history`: one broker and one `mycelium history`
 * process on NATS with JetStream, both on CPU 0. The history's CPU counts as the broker's cost in both.
 */
export type ServerKind = 'relay' | 'memory' | 'nats' | 'cluster' | 'memory+history' | 'nats+history';

export interface Server {
  kind: ServerKind;
  /** Processes whose CPU counts as the cost of delivery (the brokers, or the relay). */
  pids: number[];
  /** nats-server's pid when the brokers run on NATS: its CPU is reported beside theirs. */
  natsPid?: number;
  /** Where gateways connect, and where web clients connect (different brokers in the cluster case). */
  gatewayPort: number;
  clientPort: number;
  stop(): Promise<void>;
}

const keyDir = mkdtempSync(join(tmpdir(), 'myc-bench-'));
const keyFile = join(keyDir, 'key.pem');
writeKeyPair(keyFile);
const privateKey = readPrivateKey(keyFile);

function brokerArgs(port: number, natsUrl?: string): string[] {
  const args = [
    join(ROOT, 'bin/mycelium.js'),
    'broker',
    '--port',
    String(port),
    '--host',
    '127.0.0.1',
    '--key-file',
    keyFile,
    '--log-level',
    'warn',
  ];
  return natsUrl ? [...args, '--nats-url', natsUrl] : args;
}

/**
 * Starts the server under test on CPU 0: the bare relay, one broker (in-process bus or NATS), or two brokers
 * on one NATS server (`cluster`: gateways on the first, clients on the second).
 */
export async function startServer(kind: ServerKind): Promise<Server> {
  const stops: Array<() => Promise<void>> = [];
  const children: ChildProcess[] = [];
  let natsPid: number | undefined;
  let natsUrl: string | undefined;
  if (kind === 'nats' || kind === 'cluster' || kind === 'nats+history') {
    const natsPort = await freePort();
    // JetStream: brokers on NATS keep node ownership in a JetStream key-value bucket and refuse to start without it.
    const store = mkdtempSync(join(tmpdir(), 'bench-nats-'));
    const nats = spawnPinned('0', '/usr/sbin/nats-server', [
      '-a',
      '127.0.0.1',
      '-p',
      String(natsPort),
      '-js',
      '-sd',
      store,
    ]);
    await waitForPort(natsPort);
    natsPid = nats.pid;
    natsUrl = `nats://127.0.0.1:${natsPort}`;
    stops.push(async () => {
      await stopProcess(nats);
      rmSync(store, { recursive: true, force: true });
    });
  }
  const gatewayPort = await freePort();
  if (kind === 'relay') {
    children.push(
      spawnPinned('0', process.execPath, ['--import', 'tsx', join(ROOT, 'utils/bench/relay.ts'), String(gatewayPort)]),
    );
  } else if (kind === 'memory+history') {
    const dir = mkdtempSync(join(tmpdir(), 'bench-history-'));
    stops.push(async () => rmSync(dir, { recursive: true, force: true }));
    const up = [join(ROOT, 'bin/mycelium.js'), 'up', '--services', 'broker,history', '--port', String(gatewayPort)];
    const rest = [
      '--host',
      '127.0.0.1',
      '--key-file',
      keyFile,
      '--db',
      `sqlite:${join(dir, 'h.db')}`,
      '--log-level',
      'warn',
    ];
    children.push(spawnPinned('0', process.execPath, [...up, ...rest]));
  } else {
    children.push(spawnPinned('0', process.execPath, brokerArgs(gatewayPort, natsUrl)));
  }
  if (kind === 'nats+history') {
    const dir = mkdtempSync(join(tmpdir(), 'bench-history-'));
    stops.push(async () => rmSync(dir, { recursive: true, force: true }));
    const history = [join(ROOT, 'bin/mycelium.js'), 'history', '--db', `sqlite:${join(dir, 'h.db')}`];
    const rest = ['--nats-url', natsUrl!, '--http-port', '-1', '--key-file', keyFile, '--log-level', 'warn'];
    children.push(spawnPinned('0', process.execPath, [...history, ...rest]));
  }
  await waitForPort(gatewayPort);
  let clientPort = gatewayPort;
  if (kind === 'cluster') {
    clientPort = await freePort();
    children.push(spawnPinned('0', process.execPath, brokerArgs(clientPort, natsUrl)));
    await waitForPort(clientPort);
  }
  return {
    kind,
    pids: children.map((c) => c.pid!),
    natsPid,
    gatewayPort,
    clientPort,
    stop: async () => {
      for (const c of children) await stopProcess(c);
      for (const f of stops) await f();
    },
  };
}

const cpuOf = (pids: number[]) => pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
const peakRssOf = (pids: number[]) => pids.reduce((sum, pid) => sum + memoryKiB(pid).peak, 0);

function open(url: string, token: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

interface Client {
  ws: WebSocket;
  received: number;
  latencies?: number[];
}

interface Rig {
  gateways: WebSocket[];
  clients: Client[];
  close(): void;
}

async function rig(server: Server, k: number): Promise<Rig> {
  const gatewayBase = `ws://127.0.0.1:${server.gatewayPort}`;
  const clientBase = `ws://127.0.0.1:${server.clientPort}`;
  const gateways: WebSocket[] = [];
  for (let g = 0; g < 2; g++) {
    const ws = await open(
      `${gatewayBase}/gw`,
      await mintToken(privateKey, { role: 'gateway', sub: `gw${g}`, ttlSeconds: 3600 }),
    );
    for (let n = 0; n < NODES_PER_GATEWAY; n++)
      ws.send(JSON.stringify({ type: 'new', uid: `gw${g}-node-${n}`, protocol: 'bench' }));
    gateways.push(ws);
  }
  const clientToken = await mintToken(privateKey, { role: 'viewer', sub: 'bench', ttlSeconds: 3600 });
  const clients: Client[] = [];
  for (let i = 0; i < k; i++) {
    const ws = await open(`${clientBase}/ws`, clientToken);
    const c: Client = { ws, received: 0, latencies: i < LATENCY_SAMPLE_CLIENTS ? [] : undefined };
    if (server.kind !== 'relay') {
      // The broker answers pyaiot's registration with a snapshot that ends in `synced`.
      await new Promise<void>((resolve) => {
        const onMsg = (data: WebSocket.RawData) => {
          if (data.toString().includes('"synced"')) {
            ws.off('message', onMsg);
            resolve();
          }
        };
        ws.on('message', onMsg);
        ws.send(JSON.stringify({ type: 'new', data: 'client' }));
      });
    }
    ws.on('message', (data: Buffer) => {
      c.received++;
      if (c.latencies) {
        const s = data.toString();
        const at = s.lastIndexOf('@');
        if (at > 0) c.latencies.push(performance.now() - Number.parseFloat(s.slice(at + 1)));
      }
    });
    clients.push(c);
  }
  return {
    gateways,
    clients,
    close: () => {
      for (const g of gateways) g.terminate();
      for (const c of clients) c.ws.terminate();
    },
  };
}

let seq = 0;
function frame(g: number): string {
  const n = seq++ % NODES_PER_GATEWAY;
  return `{"type":"update","uid":"gw${g}-node-${n}","endpoint":"temperature","data":"${(20 + (seq % 100) / 10).toFixed(1)}°C@${performance.now().toFixed(3)}"}`;
}

export interface Result {
  delivered: number;
  perSecond: number;
  cpuUsPerMsg: number;
  natsCpuUsPerMsg?: number;
  peakRssMiB: number;
  p50?: number;
  p99?: number;
  lostFraction?: number;
}

/** (a) closed loop: send as fast as clients take it, bounded by socket buffers and messages in flight. */
export async function maxThroughput(server: Server, k: number, seconds: number): Promise<Result> {
  const r = await rig(server, k);
  let sent = 0;
  let running = true;
  const pump = () => {
    if (!running) return;
    let minReceived = Number.POSITIVE_INFINITY;
    for (const c of r.clients) if (c.received < minReceived) minReceived = c.received;
    for (let i = 0; i < 200; i++) {
      if (sent - minReceived > MAX_IN_FLIGHT) break;
      const g = sent & 1;
      if (r.gateways[g].bufferedAmount > MAX_GATEWAY_BUFFER) break;
      r.gateways[g].send(frame(g));
      sent++;
    }
    setImmediate(pump);
  };
  pump();
  await new Promise((res) => setTimeout(res, WARMUP_MS));
  const before = r.clients.reduce((a, c) => a + c.received, 0);
  const cpu0 = cpuOf(server.pids);
  const nats0 = server.natsPid ? cpuMs(server.natsPid) : 0;
  const t0 = performance.now();
  await new Promise((res) => setTimeout(res, seconds * 1000));
  const delivered = r.clients.reduce((a, c) => a + c.received, 0) - before;
  const cpu1 = cpuOf(server.pids);
  const nats1 = server.natsPid ? cpuMs(server.natsPid) : 0;
  const elapsed = (performance.now() - t0) / 1000;
  running = false;
  const peakKiB = peakRssOf(server.pids);
  r.close();
  return {
    delivered,
    perSecond: delivered / elapsed,
    cpuUsPerMsg: ((cpu1 - cpu0) * 1000) / delivered,
    natsCpuUsPerMsg: server.natsPid ? ((nats1 - nats0) * 1000) / delivered : undefined,
    peakRssMiB: peakKiB / 1024,
  };
}

/** (b) open loop at a fixed offered rate: latency from the gateway's send to each sampled client's receipt. */
export async function fixedRate(server: Server, k: number, rate: number, seconds: number): Promise<Result> {
  const r = await rig(server, k);
  const tickMs = 5;
  let credit = 0;
  let sent = 0;
  let measuring = false;
  let sentInWindow = 0;
  const timer = setInterval(() => {
    credit += (rate * tickMs) / 1000;
    while (credit >= 1) {
      const g = sent & 1;
      r.gateways[g].send(frame(g));
      sent++;
      if (measuring) sentInWindow++;
      credit--;
    }
  }, tickMs);
  await new Promise((res) => setTimeout(res, WARMUP_MS));
  for (const c of r.clients) c.latencies = c.latencies ? [] : undefined;
  const before = r.clients.reduce((a, c) => a + c.received, 0);
  const cpu0 = cpuOf(server.pids);
  const nats0 = server.natsPid ? cpuMs(server.natsPid) : 0;
  measuring = true;
  const t0 = performance.now();
  await new Promise((res) => setTimeout(res, seconds * 1000));
  measuring = false;
  clearInterval(timer);
  const cpu1 = cpuOf(server.pids);
  const nats1 = server.natsPid ? cpuMs(server.natsPid) : 0;
  const elapsed = (performance.now() - t0) / 1000;
  // Let in-flight messages land (bounded), so the loss figure counts only what never arrives.
  const expected = before + sentInWindow * k;
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && r.clients.reduce((a, c) => a + c.received, 0) < expected)
    await new Promise((res) => setTimeout(res, 50));
  const delivered = r.clients.reduce((a, c) => a + c.received, 0) - before;
  const lat = r.clients.flatMap((c) => c.latencies ?? []).sort((a, b) => a - b);
  const peakKiB = peakRssOf(server.pids);
  r.close();
  return {
    delivered,
    perSecond: delivered / elapsed,
    cpuUsPerMsg: ((cpu1 - cpu0) * 1000) / Math.max(1, delivered),
    natsCpuUsPerMsg: server.natsPid ? ((nats1 - nats0) * 1000) / Math.max(1, delivered) : undefined,
    peakRssMiB: peakKiB / 1024,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    lostFraction: Math.max(0, 1 - delivered / (sentInWindow * k)),
  };
}

export interface Case {
  name: string;
  run(server: Server): Promise<Result>;
}

function fmt(n: number | undefined, digits = 1): string {
  return n === undefined || Number.isNaN(n) ? '-' : n.toFixed(digits);
}

/** Runs every case on every server kind `reps` times (a fresh server each time) and prints medians. */
export async function runCases(cases: Case[], servers: ServerKind[], reps: number): Promise<void> {
  console.log(
    '| server | case | delivered msg/s | server CPU µs/msg | + nats-server µs/msg | peak RSS MiB | p50 ms | p99 ms | undelivered |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const c of cases) {
    for (const kind of servers) {
      const results: Result[] = [];
      for (let i = 0; i < reps; i++) {
        const server = await startServer(kind);
        try {
          results.push(await c.run(server));
        } finally {
          await server.stop();
        }
      }
      const m = (f: (r: Result) => number | undefined) =>
        median(results.map(f).filter((v): v is number => v !== undefined));
      const lost = m((r) => r.lostFraction);
      console.log(
        `| ${kind} | ${c.name} | ${fmt(
          m((r) => r.perSecond),
          0,
        )} | ${fmt(
          m((r) => r.cpuUsPerMsg),
          2,
        )} | ${fmt(
          m((r) => r.natsCpuUsPerMsg),
          2,
        )} | ${fmt(m((r) => r.peakRssMiB))} | ${fmt(
          m((r) => r.p50),
          2,
        )} | ${fmt(
          m((r) => r.p99),
          2,
        )} | ${Number.isNaN(lost) ? '-' : `${(lost * 100).toFixed(1)}%`} |`,
      );
    }
  }
}

/** Pins this load generator to CPU 1 (the servers run on CPU 0). */
export function pinSelf(): void {
  try {
    execFileSync('taskset', ['-a', '-cp', '1', String(process.pid)], { stdio: 'ignore' });
  } catch {
    console.warn('taskset unavailable: running unpinned');
  }
}
