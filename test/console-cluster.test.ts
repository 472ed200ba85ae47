// [console] Two broker processes on a real nats-server (issue 12): the requester sits on one broker, the agent's
// gateway on the other; the request crosses the bus and the output comes back to the requester alone.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, writeCommandsFile } from './helpers/agent.ts';
import type { TestBroker } from './helpers/broker.ts';
import { type BrokerProcess, spawnBroker } from './helpers/broker-process.ts';
import { makeKeys } from './helpers/keys.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { waitFor } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { nodeUrl, startWsGateway } from './helpers/ws-gateway.ts';

const keys = makeKeys();
let nats: NatsServer;
const cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true });
});
afterAll(async () => {
  await nats.stop();
});
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function broker(id: string, extra: string[] = []): Promise<BrokerProcess> {
  const b = await spawnBroker(id, keys.keyFile, ['--nats-url', nats.url, '--peer-heartbeat-ms', '200', ...extra]);
  cleanup(() => b.kill());
  return b;
}

describe('console across brokers', () => {
  it('a requester on broker B runs a command on an agent whose gateway is on broker A', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'myc-console-cluster-'));
    const auditFile = join(dir, 'audit-b.jsonl');
    const a = await broker('broker-a');
    const b = await broker('broker-b', ['--audit-file', auditFile]);
    // The gateway only needs the broker's address and the key its tokens are minted with.
    const gw = await startWsGateway({ ws: a.ws, keys } as unknown as TestBroker, cleanup, { gatewayId: 'gw-a' });
    const agent = startAgent([
      '--gateway-url',
      nodeUrl(gw),
      '--token',
      await keys.token('node', 'far-agent'),
      '--commands',
      writeCommandsFile(dir),
    ]);
    cleanup(() => agent.stop());
    const c = await TestPeer.connect(`${b.ws}/ws`, await keys.token('operator', 'op-b'));
    cleanup(() => c.close());
    const watcher = await TestPeer.connect(`${a.ws}/ws`, await keys.token('admin', 'watcher'));
    cleanup(() => watcher.close());
    watcher.send({ type: 'new', data: 'client' });
    c.send({ type: 'new', data: 'client' });
    await c.next(
      (f) => f.type === 'update' && f.uid === 'far-agent' && f.endpoint === 'console',
      'broker B to learn the agent',
      20_000,
    );
    c.send({ type: 'exec', id: 'x1', uid: 'far-agent', command: 'echo', params: { text: 'across the bus' } });
    const exit = await c.next((f) => f.type === 'exec-exit' && f.id === 'x1', 'the exit', 15_000);
    expect(exit).toMatchObject({ status: 'ok', code: 0 });
    const out = c.frames.filter((f) => f.type === 'exec-output' && f.id === 'x1').map((f) => f.data);
    expect(out.join('')).toBe('across the bus\n');
    expect(watcher.frames.some((f) => f.type === 'exec-output' || f.type === 'exec-exit')).toBe(false);
    // A timeout crossing the bus, and the audit on the requester's broker.
    c.send({ type: 'exec', id: 'x2', uid: 'far-agent', command: 'sleep', params: { s: '30' }, timeoutMs: 300 });
    expect(await c.next((f) => f.type === 'exec-exit' && f.id === 'x2', 'the timeout', 15_000)).toMatchObject({
      status: 'timeout',
    });
    const lines = await waitFor(() => {
      try {
        const l = readFileSync(auditFile, 'utf8').trim().split('\n');
        return l.length >= 2 ? l.map((x) => JSON.parse(x)) : undefined;
      } catch {
        return undefined;
      }
    }, 'two audit lines');
    expect(lines[0]).toMatchObject({
      sub: 'op-b',
      node: 'far-agent',
      command: 'echo',
      status: 'ok',
      broker: 'broker-b',
    });
    expect(lines[1]).toMatchObject({ command: 'sleep', status: 'timeout' });
  }, 90_000);
});
