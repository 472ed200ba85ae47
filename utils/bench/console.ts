// npm run bench:console — the device console's figures (issue 12). Broker and WebSocket gateway run as processes
// of their own (RSS read from /proc), the requester is this process (REST over loopback):
//   1. the real agent (`mycelium agent` process): its idle RSS;
//   2. `echo` round trip, REST request → exit (POST /nodes/:uid/exec?wait=true), at a fixed rate: p50 and p99,
//      first to a simulated agent link that answers from memory (the path alone), then to the real agent;
//   3. `uptime` on N agents at once (POST /exec with a filter, every agent spawning a real `uptime`): the time
//      until every result is in. The agents are the real Agent component, N of them in this process, each with its
//      own WebSocket link and token;
//   4. a fresh gateway holding L simulated agent links (a WebSocket each, announcing a console resource like an
//      agent): gateway RSS per link.
// Options (env): CONSOLE_BENCH_RATES (10,50 per second), CONSOLE_BENCH_SECONDS (10), CONSOLE_BENCH_AGENTS (1000),
// CONSOLE_BENCH_LINKS (10000), CONSOLE_BENCH_PIN=1: the hub (broker, gateway and this process) on CPU 0 and the real
// agent on CPU 1 (taskset), as a device has a CPU of its own instead of sharing the hub's.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { Agent } from '../../services/agent/agent.ts';
import { parseCommands } from '../../services/agent/commands-file.ts';
import { agentOptions } from '../../services/agent/options.ts';
import { readPrivateKey, writeKeyPair } from '../../services/common/keys.ts';
import { silentLogger } from '../../services/common/log.ts';
import { mintToken } from '../../services/common/tokens.ts';
import { freePort, memoryKiB, percentile, stopProcess, waitForPort } from './proc.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MYCELIUM = join(ROOT, 'bin/mycelium.js');
const RATES = (process.env.CONSOLE_BENCH_RATES ?? '10,50').split(',').map(Number);
const SECONDS = Number(process.env.CONSOLE_BENCH_SECONDS ?? 10);
const AGENTS = Number(process.env.CONSOLE_BENCH_AGENTS ?? 1000);
const LINKS = Number(process.env.CONSOLE_BENCH_LINKS ?? 10_000);
const REAL_AGENTS = Number(process.env.CONSOLE_BENCH_REAL_AGENTS ?? 50);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dir = mkdtempSync(join(tmpdir(), 'myc-bench-console-'));
const keyFile = join(dir, 'key.pem');
writeKeyPair(keyFile);
const privateKey = readPrivateKey(keyFile);
const token = (role: 'node' | 'admin' | 'operator', sub: string) =>
  mintToken(privateKey, { role, sub, ttlSeconds: 3600 });
const children: ChildProcess[] = [];

const PIN = process.env.CONSOLE_BENCH_PIN === '1';
const CPU = { hub: '0', device: '1' } as const;
if (PIN) execFileSync('taskset', ['-cp', CPU.hub, String(process.pid)], { stdio: 'ignore' });

function service(args: string[], log: string, cpu: keyof typeof CPU = 'hub'): ChildProcess {
  const fd = openSync(join(dir, log), 'w');
  const argv = [process.execPath, MYCELIUM, ...args];
  const [file, ...rest] = PIN ? ['taskset', '-c', CPU[cpu], ...argv] : argv;
  const child = spawn(file, rest, { stdio: ['ignore', fd, fd] });
  children.push(child);
  return child;
}

async function until<T>(
  cond: () => Promise<T | undefined> | T | undefined,
  what: string,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function startGateway(brokerPort: number, id: string): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const child = service(
    [
      'ws-gateway',
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--broker-url',
      `ws://127.0.0.1:${brokerPort}`,
      '--key-file',
      keyFile,
      '--gateway-id',
      id,
      '--max-nodes',
      '20000',
      '--http-port=-1',
    ],
    `${id}.log`,
  );
  await waitForPort(port, '127.0.0.1', 30_000);
  return { child, port };
}

/**
 * `count` WebSocket node links announcing a console like an agent's. With `answer`, each answers an exec with one
 * line of output and an ok exit, as `uptime` would.
 */
async function links(
  url: string,
  prefix: string,
  count: number,
  capability: object,
  answer: boolean,
): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  const tokens = await Promise.all(Array.from({ length: count }, (_, i) => token('node', `${prefix}-${i}`)));
  const line = ' 10:00:00 up 1 day,  load average: 0.00\n';
  for (let i = 0; i < count; i += 200) {
    const batch = tokens.slice(i, i + 200).map(
      (t, j) =>
        new Promise<void>((resolve) => {
          const ws = new WebSocket(url, { headers: { authorization: `Bearer ${t}` }, perMessageDeflate: false });
          ws.once('open', () => {
            ws.send(
              JSON.stringify({ type: 'update', data: { console: capability, hostname: `dev-${i + j}`, uptimeS: 1 } }),
            );
            resolve();
          });
          ws.once('error', () => resolve());
          if (answer) {
            ws.on('message', (data) => {
              const f = JSON.parse(data.toString()) as { type?: string; id?: string; params?: { text?: string } };
              if (f.type !== 'exec' || f.id === undefined) return;
              // `echo` answers its text, as the real command would; anything else answers as `uptime`.
              const out = f.params?.text === undefined ? line : `${f.params.text}\n`;
              ws.send(JSON.stringify({ type: 'exec-output', id: f.id, seq: 0, stream: 'stdout', data: out }));
              const exit = { type: 'exec-exit', id: f.id, status: 'ok', code: 0, signal: null, truncated: false };
              ws.send(JSON.stringify({ ...exit, durationMs: 0, bytes: out.length }));
            });
          }
          sockets.push(ws);
        }),
    );
    await Promise.all(batch);
  }
  return sockets;
}

async function main(): Promise<void> {
  const load = loadavg()
    .map((l) => l.toFixed(1))
    .join(', ');
  const brokerPort = await freePort();
  service(
    [
      'broker',
      '--port',
      String(brokerPort),
      '--host',
      '127.0.0.1',
      '--key-file',
      keyFile,
      '--max-connections-per-address',
      '30000',
      '--client-frames-per-second',
      '100000',
      '--client-frame-burst',
      '100000',
    ],
    'broker.log',
  );
  await waitForPort(brokerPort, '127.0.0.1', 30_000);
  const api = `http://127.0.0.1:${brokerPort}/api/v1`;
  const admin = await token('admin', 'bench');
  const headers = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
  const nodeCount = async (prefix: string) => {
    const res = await fetch(`${api}/nodes`, { headers });
    const nodes = (await res.json()) as { uid: string; status: string; resources: Record<string, unknown> }[];
    return nodes.filter((n) => n.uid.startsWith(prefix) && n.status === 'online' && n.resources.console !== undefined)
      .length;
  };
  /** POST /exec `uptime` on every online agent whose uid starts with `prefix`; until the stream ends. */
  const runOnAll = async (prefix: string) => {
    const t0 = performance.now();
    const res = await fetch(`${api}/exec`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ command: 'uptime', filter: { uidPrefix: prefix } }),
    });
    const all = (await res.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; status?: string });
    const ms = performance.now() - t0;
    const exits = all.filter((l) => l.type === 'exec-exit');
    return { ms, exits: exits.length, ok: exits.filter((l) => l.status === 'ok').length };
  };
  const gw = await startGateway(brokerPort, 'bench-gw');
  const gatewayUrl = `ws://127.0.0.1:${gw.port}/node`;

  // 1. The real agent, idle.
  const commandsFile = join(dir, 'commands.yaml');
  writeFileSync(
    commandsFile,
    'echo: {argv: [echo, "{text}"], params: {text: "[a-z0-9 ]{0,64}"}}\nuptime: {argv: [uptime]}\n',
  );
  const agent = service(
    [
      'agent',
      '--gateway-url',
      gatewayUrl,
      '--token',
      await token('node', 'real-agent'),
      '--commands',
      commandsFile,
      '--max-concurrent',
      '64',
    ],
    'agent.log',
    'device',
  );
  await until(async () => (await nodeCount('real-agent')) === 1, 'the real agent', 60_000);
  await sleep(3000);
  const agentRss = memoryKiB(agent.pid as number).rss;

  /**
   * `echo` round trips to `uid` at `rate` per second, open loop (a request every 1/rate s whatever the previous
   * did). Besides the round trip, the exit's `durationMs` (measured by the agent: spawn to close) is collected, so
   * the device's share and the path's share are told apart.
   */
  const echoes = async (uid: string, what: string, rate: number) => {
    const latencies: number[] = [];
    const onDevice: number[] = [];
    let failures = 0;
    const failureKinds = new Map<string, number>();
    const total = rate * SECONDS;
    const inflight: Promise<void>[] = [];
    const started = performance.now();
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      inflight.push(
        (async () => {
          const t0 = performance.now();
          const res = await fetch(`${api}/nodes/${uid}/exec?wait=true`, {
            method: 'POST',
            headers,
            body: JSON.stringify({ command: 'echo', params: { text: `n ${i}` } }),
          });
          const body = (await res.json()) as {
            status?: string;
            stdout?: string;
            error?: string;
            message?: string;
            durationMs?: number;
          };
          if (body.status === 'ok' && body.stdout === `n ${i}\n`) {
            latencies.push(performance.now() - t0);
            onDevice.push(body.durationMs ?? 0);
          } else {
            failures++;
            const kind = body.status ?? `${res.status} ${body.error}: ${body.message}`;
            failureKinds.set(kind, (failureKinds.get(kind) ?? 0) + 1);
          }
        })().catch((err: Error) => {
          failures++;
          const kind = `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}`;
          failureKinds.set(kind, (failureKinds.get(kind) ?? 0) + 1);
        }),
      );
    }
    await Promise.all(inflight);
    latencies.sort((a, b) => a - b);
    onDevice.sort((a, b) => a - b);
    const failed = failures > 0 ? `: ${JSON.stringify(Object.fromEntries(failureKinds))}` : '';
    const device = `; on the device (spawn to close) p50 ${percentile(onDevice, 50)} ms, p99 ${percentile(onDevice, 99)} ms`;
    return `  echo REST->exit, ${what}, at ${rate}/s for ${SECONDS}s: p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms (${latencies.length} ok, ${failures} failed${failed})${device}   goal p99 < 50 ms at 50/s`;
  };
  // 2a. The path alone: a simulated agent link answering `echo` from memory (no process spawned).
  const echoCapability = { commands: { echo: { params: { text: '[a-z0-9 ]{0,64}' } } }, shell: false, pty: false };
  const echoSims = await links(gatewayUrl, 'path-echo', 1, echoCapability, true);
  await until(async () => (await nodeCount('path-echo-0')) === 1 || undefined, 'the simulated echo link', 60_000);
  const echoLines: string[] = [];
  for (const rate of RATES) echoLines.push(await echoes('path-echo-0', 'simulated agent link', rate));
  for (const s of echoSims) s.terminate();
  // 2b. The real agent: the path plus a real `echo` process per request.
  for (const rate of RATES) echoLines.push(await echoes('real-agent', 'real agent', rate));

  // 3a. `uptime` on AGENTS simulated agent links at once: each a WebSocket node that answers from memory, so the
  // figure is the console path (REST, broker, bus, gateway, links and back), not this one process spawning AGENTS
  // programs in a row (on a device each agent spawns its own).
  const simCapability = { commands: { uptime: { params: {} } }, shell: false, pty: false };
  const sims = await links(gatewayUrl, 'sim', AGENTS, simCapability, true);
  await until(async () => (await nodeCount('sim-')) === AGENTS || undefined, `${AGENTS} simulated agents`, 300_000);
  const fanOut = await runOnAll('sim-');
  for (const s of sims) s.terminate();

  // 3b. `uptime` on REAL_AGENTS real Agent components (each spawns a real `uptime`), all in this process.
  const commands = parseCommands('uptime: {argv: [uptime]}');
  const defaults = Object.fromEntries(
    Object.entries(agentOptions).map(([k, v]) => [k, 'default' in v ? v.default : undefined]),
  );
  const agents: Agent[] = [];
  for (let i = 0; i < REAL_AGENTS; i++) {
    const config = { ...defaults, gatewayUrl, token: await token('node', `ra-${i}`), statusInterval: 3600 } as never;
    const a = new Agent(config, { log: silentLogger(), commands });
    agents.push(a);
    await a.start();
  }
  await until(async () => (await nodeCount('ra-')) >= REAL_AGENTS || undefined, `${REAL_AGENTS} agents`, 120_000);
  const realFanOut = await runOnAll('ra-');
  await Promise.all(agents.map((a) => a.stop()));

  // 4. A fresh gateway holding LINKS simulated agent links.
  const gw2 = await startGateway(brokerPort, 'bench-links');
  await sleep(2000);
  const before = memoryKiB(gw2.child.pid as number).rss;
  const url2 = `ws://127.0.0.1:${gw2.port}/node`;
  const linkCapability = { commands: { uptime: { params: {} } }, shell: false, pty: false };
  const sockets = await links(url2, 'link', LINKS, linkCapability, false);
  await until(async () => (await nodeCount('link-')) >= LINKS * 0.99 || undefined, `${LINKS} links`, 300_000);
  await sleep(3000);
  const after = memoryKiB(gw2.child.pid as number).rss;
  const held = await nodeCount('link-');
  for (const s of sockets) s.terminate();

  const kb = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
  const out = [
    `bench:console (machine: ${process.env.BENCH_NOTE ?? 'shared, 2 cores'}${PIN ? '; hub on CPU 0, agent on CPU 1' : ''}; load average at start ${load}; services run from ${existsSync(join(ROOT, 'dist/bundle/main.js')) ? 'the bundle (dist/bundle)' : existsSync(join(ROOT, 'dist/cli/main.js')) ? 'dist/ (compiled)' : 'sources through tsx (no dist/: npm run build)'})`,
    `  agent idle RSS (real mycelium agent process):  ${kb(agentRss)}   goal <= 60 MB`,
    ...echoLines,
    `  uptime on ${AGENTS} simulated agent links at once: ${fanOut.ok}/${fanOut.exits} ok in ${(fanOut.ms / 1000).toFixed(2)} s   goal < 3 s`,
    `  uptime on ${REAL_AGENTS} real Agent components (all spawned by this one process): ${realFanOut.ok}/${realFanOut.exits} ok in ${(realFanOut.ms / 1000).toFixed(2)} s`,
    `  gateway RSS for ${held} agent links:           ${kb(after - before)} over its ${kb(before)} baseline = ${(((after - before) * 1024) / held / 1000).toFixed(1)} kB per link   goal <= 20 KB`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  await stopProcess(gw2.child);
}

try {
  await main();
} catch (err) {
  process.stderr.write(`bench:console failed: ${(err as Error).stack}\nlogs in ${dir}\n`);
  process.exitCode = 1;
} finally {
  for (const c of children.reverse()) await stopProcess(c).catch(() => undefined);
}
