// [console] The device console end to end (issue 12): a real agent process, a real WebSocket gateway and broker
// on port 0; requests from a web client, REST and the CLI.
import { execFileSync, spawn } from 'node:child_process';
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
import { execOnNode } from '../services/console/exec-client.ts';
import { bindExec } from '../services/rules/exec-binding.ts';

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

async function setup(agentArgs: string[] = [], uid = 'agent-1', brokerOverrides: object = {}): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'myc-console-'));
  const auditFile = join(dir, 'audit.jsonl');
  const tb = await startBroker({ auditFile, execGraceMs: 2000, ...brokerOverrides });
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

async function client(tb: TestBroker, role: 'viewer' | 'operator' | 'admin', sub: string = role): Promise<TestPeer> {
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

describe('refusals', () => {
  it('refuses a viewer, an operator asking for a shell or PTY, a command not allowed, a bad parameter', async () => {
    const { tb, auditFile } = await setup(['--allow-shell']);
    const viewer = await client(tb, 'viewer');
    viewer.send({ type: 'exec', id: 'v1', uid: 'agent-1', command: 'uptime' });
    expect(await exitOf(viewer, 'v1')).toMatchObject({ status: 'refused', reason: 'role viewer may not exec' });
    const op = await client(tb, 'operator');
    op.send({ type: 'exec', id: 's1', uid: 'agent-1', shell: 'id' });
    expect(await exitOf(op, 's1')).toMatchObject({ status: 'refused', reason: 'shell needs role admin' });
    op.send({ type: 'pty-open', id: 'p1', uid: 'agent-1', cols: 80, rows: 24 });
    expect(await exitOf(op, 'p1')).toMatchObject({ status: 'refused', reason: 'pty needs role admin' });
    op.send({ type: 'exec', id: 'n1', uid: 'agent-1', command: 'reboot' });
    expect(await exitOf(op, 'n1')).toMatchObject({ status: 'refused', reason: 'command not allowed' });
    // The pattern is checked by the agent itself: a value with a shell metacharacter never reaches a process.
    op.send({ type: 'exec', id: 'b1', uid: 'agent-1', command: 'echo', params: { text: 'a; rm -rf /' } });
    expect(await exitOf(op, 'b1')).toMatchObject({
      status: 'refused',
      reason: 'parameter text does not match its pattern',
    });
    op.send({ type: 'exec', id: 'u1', uid: 'nobody', command: 'echo' });
    expect(await exitOf(op, 'u1')).toMatchObject({ status: 'error', reason: 'unknown-node' });
    // An admin may run a shell line on an agent started with --allow-shell.
    const admin = await client(tb, 'admin');
    admin.send({ type: 'exec', id: 'a1', uid: 'agent-1', shell: 'echo $((6*7))' });
    expect(await exitOf(admin, 'a1')).toMatchObject({ status: 'ok', code: 0 });
    expect(outputOf(admin, 'a1')).toBe('42\n');
    // Every request is audited, refused ones too, with who asked.
    await tb.broker.audit.flush();
    const lines = readFileSync(auditFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(7);
    expect(lines[0]).toMatchObject({
      sub: 'viewer',
      role: 'viewer',
      node: 'agent-1',
      command: 'uptime',
      status: 'refused',
    });
    expect(lines.find((l) => l.shell === 'echo $((6*7))')).toMatchObject({
      sub: 'admin',
      status: 'ok',
      code: 0,
      bytes: 3,
    });
    expect(lines.find((l) => l.command === 'echo' && l.params?.text === 'a; rm -rf /')).toMatchObject({
      status: 'refused',
    });
  });

  it('an agent without --allow-shell refuses a shell line even from an admin', async () => {
    const { tb } = await setup();
    const admin = await client(tb, 'admin');
    admin.send({ type: 'exec', id: 'a1', uid: 'agent-1', shell: 'id' });
    expect(await exitOf(admin, 'a1')).toMatchObject({ status: 'refused', reason: 'shell not allowed on this node' });
  });
});

describe('limits enforced on the device', () => {
  it('a timeout kills the whole process tree (TERM, then KILL)', async () => {
    const { tb } = await setup(['--kill-grace-ms', '300']);
    const op = await client(tb, 'operator');
    op.send({ type: 'exec', id: 't1', uid: 'agent-1', command: 'tree' });
    const exit = await exitOf(op, 't1');
    expect(exit.status).toBe('timeout');
    // `sh -c 'sleep 1000 & sleep 1000'`: neither sleep may survive.
    const sleeps = execFileSync('ps', ['-eo', 'pid,pgid,args'])
      .toString()
      .split('\n')
      .filter((l) => /sleep 1000$/.test(l));
    expect(sleeps).toEqual([]);
  });

  it('output over the cap is truncated; cancel ends a command; busy beyond the cap', async () => {
    const { tb } = await setup(['--max-output-bytes', '1000', '--max-concurrent', '2']);
    const op = await client(tb, 'operator');
    op.send({ type: 'exec', id: 'f1', uid: 'agent-1', command: 'flood' });
    const flood = await exitOf(op, 'f1');
    expect(flood).toMatchObject({ status: 'ok', truncated: true, bytes: 1000 });
    expect(outputOf(op, 'f1')).toHaveLength(1000);
    op.send({ type: 'exec', id: 's1', uid: 'agent-1', command: 'sleep', params: { s: '100' } });
    op.send({ type: 'exec', id: 's2', uid: 'agent-1', command: 'sleep', params: { s: '100' } });
    op.send({ type: 'exec', id: 's3', uid: 'agent-1', command: 'sleep', params: { s: '100' } });
    expect(await exitOf(op, 's3')).toMatchObject({ status: 'busy' });
    op.send({ type: 'exec-cancel', id: 's1' });
    op.send({ type: 'exec-cancel', id: 's2' });
    expect(await exitOf(op, 's1')).toMatchObject({ status: 'cancelled', signal: 'SIGTERM' });
    expect(await exitOf(op, 's2')).toMatchObject({ status: 'cancelled' });
  });

  it('modes: ok-ng sends no output, no-return answers at once', async () => {
    const { tb } = await setup();
    const op = await client(tb, 'operator');
    op.send({ type: 'exec', id: 'o1', uid: 'agent-1', command: 'echo', params: { text: 'x' }, mode: 'ok-ng' });
    expect(await exitOf(op, 'o1')).toMatchObject({ status: 'ok', bytes: 2 });
    expect(outputOf(op, 'o1')).toBe('');
    op.send({ type: 'exec', id: 'r1', uid: 'agent-1', command: 'sleep', params: { s: '5' }, mode: 'no-return' });
    const started = await exitOf(op, 'r1', 3000);
    expect(started).toMatchObject({ status: 'ok', reason: 'started' });
  });

  it('a command running when the link drops reports its exit when the agent is back', async () => {
    const { tb, gw } = await setup();
    const op = await client(tb, 'operator');
    op.send({ type: 'exec', id: 'l1', uid: 'agent-1', command: 'sleep', params: { s: '2' } });
    await waitFor(() => gw.adapter.exec.inFlight === 1, 'the request to reach the agent');
    const opens = tb.broker.table.get('agent-1');
    expect(opens?.status).toBe('online');
    // Drop the agent's connection from the gateway side; it reconnects with backoff.
    const session = gw.core.node('agent-1')?.state;
    session?.ws.terminate();
    await waitFor(
      () => gw.core.node('agent-1')?.state !== session && gw.core.node('agent-1') !== undefined,
      'the agent to reconnect',
      10_000,
    );
    expect(await exitOf(op, 'l1', 15_000)).toMatchObject({ status: 'ok', code: 0 });
  });
});

describe('execOnNode and its callers (the rules binding, REST): busy, timeouts and gone nodes answer quickly', () => {
  const requester = { sub: 'rules', role: 'operator' as const };
  const gatewayOf = (tb: TestBroker, uid = 'agent-1') => tb.broker.table.get(uid)?.gateway as string;
  /** The `sleep N` processes alive on this machine (N unique per test). */
  const sleeping = (n: string) =>
    execFileSync('ps', ['-eo', 'args'])
      .toString()
      .split('\n')
      .filter((l) => l.trim() === `sleep ${n}`);

  it('an agent at its cap answers busy at once (not at the wait bound), through the rules binding and REST', async () => {
    const { tb, gw } = await setup(['--max-concurrent', '1']);
    const first = execOnNode(tb.broker.bus, {
      uid: 'agent-1',
      gateway: gatewayOf(tb),
      command: 'sleep',
      params: { s: '4310' },
      requester,
    });
    cleanup(() => first.cancel());
    await waitFor(() => sleeping('4310').length === 1, 'the first sleep to run', 10_000);
    const t0 = Date.now();
    const second = await bindExec(tb.broker.bus).exec({
      uid: 'agent-1',
      gateway: gatewayOf(tb),
      command: 'sleep',
      params: { s: '4311' },
      requester,
    });
    // The wait bound of a request naming no timeout is 60 s plus the grace: `busy` comes from the agent at once.
    expect(second).toMatchObject({ status: 'busy', reason: '1 commands running' });
    expect(Date.now() - t0).toBeLessThan(5000);
    const res = await fetch(`${tb.http}/api/v1/nodes/agent-1/exec?wait=true`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await tb.keys.token('operator', 'olive')}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ command: 'sleep', params: { s: '4312' } }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'busy' });
    expect(sleeping('4311')).toEqual([]);
    first.cancel();
    expect(await first.done).toMatchObject({ status: 'cancelled' });
    expect(gw.adapter.exec.inFlight).toBe(0);
  });

  it("a caller's timeout cancels the command on the agent (whose own default timeout is far longer)", async () => {
    const { tb } = await setup(['--default-timeout-ms', '600000', '--kill-grace-ms', '300']);
    // The caller waits 400 ms plus a 400 ms grace for a request naming no timeout; the agent would give it 600 s.
    const call = execOnNode(
      tb.broker.bus,
      { uid: 'agent-1', gateway: gatewayOf(tb), command: 'sleep', params: { s: '4320' }, requester },
      undefined,
      { defaultTimeoutMs: 400, graceMs: 400 },
    );
    await waitFor(() => sleeping('4320').length === 1, 'the sleep to run', 10_000);
    expect(await call.done).toMatchObject({ status: 'timeout', reason: 'no exit from the node in time' });
    await waitFor(() => sleeping('4320').length === 0, 'the sleep to be killed on the device', 10_000);

    // A caller that gives up through an AbortSignal (a rule's invocation ending) cancels the same way.
    const abort = new AbortController();
    const outcome = bindExec(tb.broker.bus).exec({
      uid: 'agent-1',
      gateway: gatewayOf(tb),
      command: 'sleep',
      params: { s: '4321' },
      requester,
      signal: abort.signal,
    });
    await waitFor(() => sleeping('4321').length === 1, 'the second sleep to run', 10_000);
    abort.abort();
    expect(await outcome).toMatchObject({ status: 'cancelled' });
    expect(sleeping('4321')).toEqual([]);
  });

  it('a node or gateway that is gone answers an error at once', async () => {
    const { tb, gw, agent } = await setup();
    const gateway = gatewayOf(tb);
    const run = (gatewayId: string, uid = 'agent-1') =>
      bindExec(tb.broker.bus).exec({ uid, gateway: gatewayId, command: 'uptime', params: {}, requester });
    const quick = async (p: Promise<{ status: string; reason?: string }>) => {
      const t0 = Date.now();
      const outcome = await p;
      expect(Date.now() - t0).toBeLessThan(3000);
      return outcome;
    };
    // A node its gateway does not hold (gone, or never there): the gateway answers.
    expect(await quick(run(gateway, 'no-such-node'))).toMatchObject({ status: 'error', reason: 'node-offline' });
    // The agent stops: at once, before and after the broker marks it offline.
    await agent.stop();
    expect(await quick(run(gateway))).toMatchObject({ status: 'error', reason: 'node-offline' });
    await waitFor(() => tb.broker.table.get('agent-1')?.status === 'offline', 'the node offline', 10_000);
    const res = await fetch(`${tb.http}/api/v1/nodes/agent-1/exec?wait=true`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await tb.keys.token('operator', 'olive')}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ command: 'uptime' }),
    });
    expect(res.status).toBe(409);
    // A gateway nobody serves (gone, or a stale gateway id): no responders on the bus.
    await gw.stop();
    expect(await quick(run('no-such-gateway'))).toMatchObject({ status: 'error', reason: 'gateway-unreachable' });
    await waitFor(async () => (await run(gateway)).reason === 'gateway-unreachable', 'the gateway unserved', 10_000);
  });
});

describe('attacks', () => {
  it('refuses huge, prototype-named, control-character and foreign-id frames without harm', async () => {
    const { tb, gw } = await setup();
    const op = await client(tb, 'operator');
    // Too many params / a __proto__ param name / control characters in the id: bad shape, the socket closes (1003).
    const bad = [
      { type: 'exec', id: 'x', uid: 'agent-1', command: 'echo', params: JSON.parse('{"__proto__":"x"}') },
      { type: 'exec', id: 'a\u0000b', uid: 'agent-1', command: 'echo' },
      { type: 'exec', id: 'x', uid: 'agent-1', command: 'echo', params: { text: 'y'.repeat(2000) } },
      { type: 'exec', id: 'x', uid: 'agent-1', command: '../bin/sh' },
      {
        type: 'exec',
        id: 'x',
        uid: 'agent-1',
        command: 'echo',
        params: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`p${i}`, 'v'])),
      },
      { type: 'exec', id: 'x', uid: 'agent-1', shell: 'x'.repeat(5000) },
      { type: 'pty-open', id: 'x', uid: 'agent-1', cols: 100000, rows: 24 },
    ];
    for (const frame of bad) {
      const c = await client(tb, 'operator');
      c.send(JSON.stringify(frame));
      expect((await c.closed()).code).toBe(1003);
    }
    // Cancelling someone else's request: the id names nothing on this connection.
    op.send({ type: 'exec', id: 'mine', uid: 'agent-1', command: 'sleep', params: { s: '1' } });
    const thief = await client(tb, 'admin', 'thief');
    thief.send({ type: 'exec-cancel', id: 'mine' });
    await thief.next((f) => f.type === 'error' && f.id === 'mine', 'the refusal');
    expect(await exitOf(op, 'mine')).toMatchObject({ status: 'ok' });
    // An agent answering a request that is not its own: dropped and counted.
    const intruder = await TestPeer.connect(nodeUrl(gw), await tb.keys.token('node', 'intruder'));
    cleanup(() => intruder.close());
    intruder.send({
      type: 'exec-exit',
      id: 'whatever',
      status: 'ok',
      code: 0,
      signal: null,
      truncated: false,
      durationMs: 1,
      bytes: 0,
    });
    intruder.send({ type: 'exec-output', id: 'x', seq: 0, stream: 'stdout', data: 1 });
    expect((await intruder.closed()).code).toBe(1003);
    // The broker still serves.
    op.send({ type: 'exec', id: 'after', uid: 'agent-1', command: 'uptime' });
    expect(await exitOf(op, 'after')).toMatchObject({ status: 'ok' });
  });
});

describe('REST', () => {
  const post = async (tb: TestBroker, path: string, body: object, role: 'viewer' | 'operator' | 'admin' = 'operator') =>
    fetch(`${tb.http}/api/v1${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await tb.keys.token(role)}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const lines = async (res: Response) =>
    (await res.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));

  it('streams NDJSON, answers ?wait=true with one result, refuses with 4xx, audits for admins', async () => {
    const { tb } = await setup();
    const res = await post(tb, '/nodes/agent-1/exec', { command: 'echo', params: { text: 'over rest' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/x-ndjson');
    const frames = await lines(res);
    expect(frames.at(-1)).toMatchObject({ type: 'exec-exit', status: 'ok', code: 0 });
    expect(
      frames
        .filter((f) => f.type === 'exec-output')
        .map((f) => f.data)
        .join(''),
    ).toBe('over rest\n');
    const waited = await post(tb, '/nodes/agent-1/exec?wait=true', { command: 'fail' });
    expect(await waited.json()).toMatchObject({ uid: 'agent-1', status: 'ng', code: 3, stdout: '', stderr: 'oops\n' });
    expect((await post(tb, '/nodes/agent-1/exec', { command: 'uptime' }, 'viewer')).status).toBe(403);
    expect((await post(tb, '/nodes/agent-1/exec', { shell: 'id' })).status).toBe(403);
    expect((await post(tb, '/nodes/ghost/exec', { command: 'uptime' })).status).toBe(404);
    const bad = await post(tb, '/nodes/agent-1/exec', { command: 'echo', params: { ['__proto__']: 'x' }, extra: 1 });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toBe('MYC_ERR_BAD_SHAPE');
    const refused = await post(tb, '/nodes/agent-1/exec?wait=true', { command: 'nope' });
    expect(await refused.json()).toMatchObject({ status: 'refused', reason: 'command not allowed' });
    const audit = async (role: 'operator' | 'admin') =>
      fetch(`${tb.http}/api/v1/audit?limit=10`, { headers: { authorization: `Bearer ${await tb.keys.token(role)}` } });
    expect((await audit('operator')).status).toBe(403);
    const records = await (await audit('admin')).json();
    // The 403s are audited too (the viewer, the operator's shell line); the unknown node as an error.
    expect(records.map((r: { status: string }) => r.status)).toEqual([
      'ok',
      'ng',
      'refused',
      'refused',
      'error',
      'refused',
    ]);
    expect(records[2]).toMatchObject({ role: 'viewer', status: 'refused', reason: 'role viewer may not exec' });
    expect(records[0]).toMatchObject({
      sub: 'operator-test',
      role: 'operator',
      node: 'agent-1',
      via: 'rest',
      bytes: 10,
    });
  });
});

describe('REST streams', () => {
  it('a command silent for longer than the idle timeout still answers', async () => {
    const { tb } = await setup([], 'agent-1', { handshakeTimeoutMs: 300 });
    const res = await fetch(`${tb.http}/api/v1/nodes/agent-1/exec?wait=true`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await tb.keys.token('operator')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'sleep', params: { s: '1' } }),
    });
    expect(await res.json()).toMatchObject({ status: 'ok', code: 0 });
  });
});

describe('CLI', () => {
  const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;
  const cli = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'exec', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => {
        stdout += b.toString();
      });
      child.stderr.on('data', (b: Buffer) => {
        stderr += b.toString();
      });
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });

  it('prints output, exits with the remote code, runs one block per node', async () => {
    const { tb, gw, dir } = await setup();
    const second = startAgent([
      '--gateway-url',
      nodeUrl(gw),
      '--token',
      await tb.keys.token('node', 'agent-2'),
      '--commands',
      writeCommandsFile(dir),
    ]);
    cleanup(() => second.stop());
    await waitFor(() => tb.broker.table.get('agent-2')?.resources.console !== undefined, 'the second agent', 20_000);
    const common = ['--broker-url', tb.ws, '--key-file', tb.keys.keyFile];
    const ok = await cli([...common, 'agent-1', '--', 'echo', 'text=from the cli']);
    expect(ok).toMatchObject({ code: 0, stdout: 'from the cli\n' });
    const fail = await cli([...common, 'agent-1', '--', 'fail']);
    expect(fail).toMatchObject({ code: 3, stdout: '', stderr: 'oops\n' });
    const refused = await cli([...common, 'agent-1', '--', 'reboot']);
    expect(refused.code).toBe(126);
    expect(refused.stderr).toContain('command not allowed');
    const shell = await cli([...common, 'agent-1', '--shell', '--', 'id']);
    expect(shell.code).not.toBe(0);
    expect(shell.stderr).toContain('403');
    const many = await cli([...common, '--nodes', 'agent-1,agent-2', '--', 'echo', 'text=hi']);
    expect(many.code).toBe(0);
    expect(many.stdout).toContain('== agent-1: ok (exit 0)\nhi\n');
    expect(many.stdout).toContain('== agent-2: ok (exit 0)\nhi\n');
    const filtered = await cli([...common, '--filter-prefix', 'agent-', '--', 'uptime']);
    expect(filtered.stdout.match(/^== agent-\d: ok/gm)).toHaveLength(2);
  }, 120_000);
});
