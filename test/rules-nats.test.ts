// Scale-out on a real nats-server: two `mycelium rules` processes share the nodes. Every node's events run on
// exactly one worker, in order; when one worker stops, the other takes its nodes.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../services/bus/index.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { startBroker } from './helpers/broker.ts';
import { guard } from './helpers/child-process.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { tempDir } from './helpers/rules.ts';
import { waitFor } from './helpers/wait.ts';
import { nodeUrl, startWsGateway } from './helpers/ws-gateway.ts';

const BIN = fileURLToPath(new URL('../bin/mycelium.js', import.meta.url));
/** Starting `mycelium rules` from the sources on a loaded machine takes a few seconds. */
const CHILD_READY_TIMEOUT_MS = 30_000;
const NODES = 20;
const VALUES = 10;

let nats: NatsServer;
beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true });
});
afterAll(async () => {
  await nats?.stop();
});
const cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Worker {
  child: ChildProcess;
  stateDir: string;
  lines: string[];
  exited: Promise<void>;
}

async function rulesWorker(dir: string, id: string): Promise<Worker> {
  const stateDir = tempDir(cleanup, `rules-${id}-`);
  const child = spawn(
    process.execPath,
    [
      BIN,
      'rules',
      '--nats-url',
      nats.url,
      '--dir',
      dir,
      '--state-dir',
      stateDir,
      '--worker-id',
      id,
      '--heartbeat-ms',
      '200',
      // Two workers on one host: the second would find the /metrics port (9185) taken and stop.
      '--http-port=-1',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], detached: true },
  );
  guard(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
    await exited;
  });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => lines.push(line));
  await waitFor(
    () => lines.some((l) => l.includes('rules service started')),
    `rules worker ${id}`,
    CHILD_READY_TIMEOUT_MS,
  );
  return { child, stateDir, lines, exited };
}

/** The rule's state in one worker: uid -> the values it saw, in order (flushed within 200 ms). */
function seen(w: Worker): Record<string, number[]> {
  const file = join(w.stateDir, 'seq.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, number[]>) : {};
}

const count = (s: Record<string, number[]>) => Object.values(s).reduce((n, a) => n + a.length, 0);

describe('rules: scale-out on NATS', () => {
  it('two workers share the nodes: each node on one worker, in order; a stopped worker’s nodes move to the other', async () => {
    const bus = createBus({ natsUrl: nats.url, name: 'rules-test-broker' });
    await bus.start();
    cleanup(() => bus.stop());
    const tb = await startBroker({}, undefined, bus);
    cleanup(() => tb.stop());
    const gw = await startWsGateway(tb, cleanup);
    const dir = tempDir(cleanup);
    writeFileSync(
      join(dir, 'seq.js'),
      `export default { name: 'seq', on: { update: { node: 'n-*', resource: 'temperature' } },
           run(e, ctx) { const a = ctx.state.get(e.uid) ?? []; a.push(e.value); ctx.state.set(e.uid, a); } };`,
    );
    const a = await rulesWorker(dir, 'wa');
    const b = await rulesWorker(dir, 'wb');
    await waitFor(() => a.lines.some((l) => l.includes('"workers":2')), 'a sees b', 10_000);
    await waitFor(() => b.lines.some((l) => l.includes('"workers":2')), 'b sees a', 10_000);
    const nodes: WsTestNode[] = [];
    for (let i = 0; i < NODES; i++) {
      const n = new WsTestNode({
        gatewayUrl: nodeUrl(gw),
        token: await tb.keys.token('node', `n-${i}`),
        backoffInitialMs: 20,
      });
      cleanup(() => n.stop());
      await n.start();
      await n.opened();
      nodes.push(n);
    }
    await waitFor(() => tb.broker.table.size === NODES, 'every node at the broker');
    for (let v = 0; v < VALUES; v++) for (const n of nodes) n.report({ temperature: v });
    await waitFor(() => count(seen(a)) + count(seen(b)) === NODES * VALUES, 'every event run once', 30_000);
    const sa = seen(a);
    const sb = seen(b);
    const inOrder = Array.from({ length: VALUES }, (_, i) => i);
    for (let i = 0; i < NODES; i++) {
      const uid = `n-${i}`;
      expect(uid in sa !== uid in sb, `${uid} on exactly one worker`).toBe(true);
      expect(sa[uid] ?? sb[uid]).toEqual(inOrder);
    }
    expect(Object.keys(sa).length).toBeGreaterThan(0);
    expect(Object.keys(sb).length).toBeGreaterThan(0);

    // b stops (SIGTERM: it says it is leaving); a takes every node.
    process.kill(-b.child.pid!, 'SIGTERM');
    await b.exited;
    await waitFor(() => a.lines.some((l) => l.includes('"workers":1')), 'a alone', 10_000);
    for (const n of nodes) n.report({ temperature: VALUES });
    await waitFor(() => count(seen(a)) === Object.keys(sa).length * VALUES + NODES, 'a ran every node', 30_000);
    for (let i = 0; i < NODES; i++) expect(seen(a)[`n-${i}`]?.at(-1)).toBe(VALUES);
  }, 120_000);
});
