// `mycelium ws-gateway --workers 2` as a real process tree: two workers share the port, each a gateway of its
// own at the broker, and nodes are spread over them.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startBroker } from './helpers/broker.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const START_TIMEOUT_MS = 20_000;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('ws gateway: --workers', () => {
  it('runs one gateway identity per worker on one port and spreads nodes over them', async () => {
    const tb = await startBroker();
    cleanups.push(() => tb.stop());
    const port = await freePort();
    const child: ChildProcess = spawn(
      process.execPath,
      [
        join(ROOT, 'bin/mycelium.js'),
        'ws-gateway',
        ...['--port', String(port), '--host', '127.0.0.1', '--broker-url', tb.ws, '--key-file', tb.keys.keyFile],
        ...['--gateway-id', 'wk', '--workers', '2', '--http-port=-1', '--log-level', 'warn'],
      ],
      { stdio: 'ignore' },
    );
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    });
    await waitFor(
      () => tb.broker.gateways.has('wk-w1') && tb.broker.gateways.has('wk-w2'),
      'both workers at the broker',
      START_TIMEOUT_MS,
    );
    const peers: TestPeer[] = [];
    for (let i = 0; i < 4; i++) {
      const p = await TestPeer.connect(`ws://127.0.0.1:${port}/node`, await tb.keys.token('node', `wn${i}`));
      peers.push(p);
      cleanups.push(() => p.close());
      p.send({ type: 'update', data: { led: '0' } });
    }
    await waitFor(() => tb.broker.table.get('wn3')?.resources.led === '0', 'all nodes at the broker');
    const owners = new Set([0, 1, 2, 3].map((i) => tb.broker.table.get(`wn${i}`)?.gateway));
    expect(owners).toEqual(new Set(['wk-w1', 'wk-w2']));
    // SIGTERM stops the primary and its workers in order.
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    for (const p of peers) expect((await p.closed()).code).toBe(1001);
  });
});
