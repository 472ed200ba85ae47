// [console] The device console end to end (issue 12): a real agent process, a real WebSocket gateway and broker
// on port 0; requests from a web client, REST and the CLI.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type AgentProcess, startAgent, writeCommandsFile } from './helpers/agent.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { waitFor } from './helpers/wait.ts';
import { nodeUrl, startWsGateway } from './helpers/ws-gateway.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import type { WsGateway } from '../gateways/ws/gateway.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  tb: TestBroker;
  gw: WsGateway;
  agent: AgentProcess;
  dir: string;
  auditFile: string;
}

async function setup(agentArgs: string[] = [], uid = 'agent-1'): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'myc-console-'));
  const auditFile = join(dir, 'audit.jsonl');
  const tb = await startBroker({ auditFile, execGraceMs: 2000 });
  cleanup(() => tb.stop());
  const gw = await startWsGateway(tb, cleanup);
  const agent = startAgent([
    '--gateway-url',
    nodeUrl(gw),
    '--token',
    await tb.keys.token('node', uid),
    '--commands',
    writeCommandsFile(dir),
    ...agentArgs,
  ]);
  cleanup(() => agent.stop());
  await waitFor(
    () => tb.broker.table.get(uid)?.resources.console !== undefined,
    'the agent to announce its console',
    20_000,
  );
  return { tb, gw, agent, dir, auditFile };
}

async function client(tb: TestBroker, role: 'viewer' | 'operator' | 'admin', sub = role): Promise<TestPeer> {
  const c = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token(role, sub));
  cleanup(() => c.close());
  return c;
}

const exitOf = (c: TestPeer, id: string, timeoutMs = 10_000) =>
  c.next((f) => f.type === 'exec-exit' && f.id === id, `exec-exit ${id}`, timeoutMs);
const outputOf = (c: TestPeer, id: string) =>
  c.frames
    .filter((f: Frame) => f.type === 'exec-output' && f.id === id)
    .map((f: Frame) => f.data)
    .join('');

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('device console over the web client socket', () => {
  it('runs an allowed command and streams its output to the requester only', async () => {
    const { tb } = await setup();
    const op = await client(tb, 'operator');
    const other = await client(tb, 'operator', 'someone-else');
    other.send({ type: 'new', data: 'client' });
    op.send({ type: 'exec', id: 'c1', uid: 'agent-1', command: 'echo', params: { text: 'hello <script>' } });
    const exit = await exitOf(op, 'c1');
    expect(exit).toMatchObject({ status: 'ok', code: 0, truncated: false });
    expect(outputOf(op, 'c1')).toBe('hello <script>\n');
    expect(other.frames.some((f) => f.type === 'exec-output' || f.type === 'exec-exit')).toBe(false);
    const fail = { type: 'exec', id: 'c2', uid: 'agent-1', command: 'fail' };
    op.send(fail);
    expect(await exitOf(op, 'c2')).toMatchObject({ status: 'ng', code: 3 });
    expect(op.frames.find((f) => f.id === 'c2' && f.type === 'exec-output')?.stream).toBe('stderr');
  });
});
