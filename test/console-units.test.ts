// [console] The agent's allow-list and runner in isolation (issue 12): templates, patterns, limits.
import { describe, expect, it } from 'vitest';
import { buildArgv, capabilityOf, parseCommands } from '../services/agent/commands-file.ts';
import { Runner } from '../services/agent/runner.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { subjects } from '../services/bus/subjects.ts';
import { execOnNode } from '../services/console/exec-client.ts';
import type { ExecExit } from '../services/protocol/console-messages.ts';
import { settle, waitFor } from './helpers/wait.ts';

describe('commands file', () => {
  const table = parseCommands(`
ping: {argv: [ping, -c, 3, "{host}"], params: {host: "[a-z0-9.-]+"}, description: "ping a host"}
unquoted: {argv: [echo, {word}], params: {word: "[a-z]+"}}
uptime: {argv: [uptime]}
`);

  it('builds argv from templates, each value one whole argument', () => {
    expect(buildArgv(table, 'ping', { host: 'example.org' })).toEqual(['ping', '-c', '3', 'example.org']);
    expect(buildArgv(table, 'unquoted', { word: 'hi' })).toEqual(['echo', 'hi']);
    expect(buildArgv(table, 'uptime')).toEqual(['uptime']);
  });

  it('refuses what the file does not allow', () => {
    expect(buildArgv(table, 'reboot')).toBe('command not allowed');
    // Patterns are anchored whatever the file says: a partial match is no match.
    expect(buildArgv(table, 'ping', { host: 'example.org; rm -rf /' })).toBe(
      'parameter host does not match its pattern',
    );
    expect(buildArgv(table, 'ping', {})).toBe('missing parameter host');
    expect(buildArgv(table, 'ping', { host: 'a', extra: 'b' })).toBe('unknown parameter extra');
    expect(buildArgv(table, 'constructor')).toBe('command not allowed');
    expect(buildArgv(table, '__proto__')).toBe('command not allowed');
  });

  it('advertises names and patterns only', () => {
    expect(capabilityOf(table, false, true)).toEqual({
      commands: {
        ping: { params: { host: '[a-z0-9.-]+' }, description: 'ping a host' },
        unquoted: { params: { word: '[a-z]+' } },
        uptime: { params: {} },
      },
      shell: false,
      pty: true,
    });
  });

  it('rejects bad files with the command named', () => {
    expect(() => parseCommands('x: {argv: ["{p}"], params: {p: "a"}}')).toThrow(/argv\[0\]/);
    expect(() => parseCommands('x: {argv: [echo, "{p}"]}')).toThrow(/x: \{p\} has no pattern/);
    expect(() => parseCommands('x: {argv: [echo, "--opt={p}"], params: {p: "a"}}')).toThrow(/whole argv element/);
    expect(() => parseCommands('"bad name": {argv: [echo]}')).toThrow(/command name/);
    expect(() => parseCommands('x: {argv: [echo, "{p}"], params: {p: "("}}')).toThrow(/bad pattern/);
    expect(() => parseCommands('- a\n- b')).toThrow(/map of command names/);
    expect(() => parseCommands('x: {argv: [echo], params: {__proto__: "a"}}')).toThrow();
  });
});

describe('runner', () => {
  const run = (runner: Runner, req: Parameters<Runner['start']>[0]) => {
    const out: string[] = [];
    const done = new Promise<ExecExit>((resolve) => {
      const h = runner.start(req, { output: (_id, _seq, _s, data) => out.push(data), exit: resolve });
      if (h === 'busy') resolve({ type: 'exec-exit', id: req.id, status: 'busy' } as ExecExit);
    });
    return { out, done };
  };

  it('decodes invalid UTF-8 as replacement characters and reports ENOENT as an error', async () => {
    const runner = new Runner();
    const r = run(runner, { id: 'a', argv: ['printf', 'ok \\377\\n'], mode: 'output' });
    expect(await r.done).toMatchObject({ status: 'ok', code: 0, bytes: 5 });
    expect(r.out.join('')).toBe('ok \uFFFD\n');
    const missing = run(runner, { id: 'b', argv: ['/nonexistent/program'], mode: 'output' });
    expect(await missing.done).toMatchObject({ status: 'error', reason: 'ENOENT' });
  });

  it("runs commands without the agent's MYCELIUM_* settings (its token)", async () => {
    process.env.MYCELIUM_TOKEN = 'secret-node-token';
    try {
      const r = run(new Runner(), { id: 'e', argv: ['env'], mode: 'output' });
      expect(await r.done).toMatchObject({ status: 'ok' });
      expect(r.out.join('')).not.toContain('secret-node-token');
      expect(r.out.join('')).toContain('PATH=');
    } finally {
      delete process.env.MYCELIUM_TOKEN;
    }
  });

  it('caps the timeout at --max-timeout-ms and kills the group', async () => {
    const runner = new Runner({ maxTimeoutMs: 200, killGraceMs: 100 });
    const r = run(runner, { id: 't', argv: ['sh', '-c', 'trap "" TERM; sleep 30'], mode: 'output', timeoutMs: 60_000 });
    // TERM is ignored by the shell, so KILL after the grace ends it.
    expect(await r.done).toMatchObject({ status: 'timeout', signal: 'SIGKILL' });
  });
});

describe('agent link', () => {
  it('keeps a command running while the link is down and sends its exit when the link is back', async () => {
    const { WebSocketServer } = await import('ws');
    const { Agent } = await import('../services/agent/agent.ts');
    const { agentOptions } = await import('../services/agent/options.ts');
    const { silentLogger } = await import('../services/common/log.ts');
    const { settle, waitFor } = await import('./helpers/wait.ts');
    type Ws = import('ws').WebSocket;
    const received: { type: string; id?: string; status?: string }[] = [];
    let current: Ws | undefined;
    const listen = (port: number) => {
      const server = new WebSocketServer({ port, host: '127.0.0.1' });
      server.on('connection', (ws) => {
        current = ws;
        ws.on('message', (d) => received.push(JSON.parse(d.toString())));
      });
      return new Promise<InstanceType<typeof WebSocketServer>>((resolve) =>
        server.once('listening', () => resolve(server)),
      );
    };
    let server = await listen(0);
    const port = (server.address() as { port: number }).port;
    const defaults = Object.fromEntries(
      Object.entries(agentOptions).map(([k, v]) => [k, 'default' in v ? v.default : undefined]),
    );
    const agent = new Agent(
      {
        ...defaults,
        gatewayUrl: `ws://127.0.0.1:${port}/node`,
        token: 't',
        backoffInitialMs: 50,
        backoffMaxMs: 100,
      } as never,
      { log: silentLogger(), commands: parseCommands('nap: {argv: [sleep, "1"]}') },
    );
    await agent.start();
    try {
      await waitFor(() => current !== undefined && received.some((f) => f.type === 'update'), 'the agent to connect');
      current?.send(
        JSON.stringify({ type: 'exec', id: 'g1', uid: 'a', command: 'nap', requester: { sub: 's', role: 'operator' } }),
      );
      await waitFor(() => agent.connected, 'the link');
      // The gateway goes away entirely while the command runs.
      for (const c of server.clients) c.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      current = undefined;
      await waitFor(() => !agent.connected, 'the agent to notice');
      await settle(1500); // a negative check: the 1 s command ends meanwhile, with nobody to tell
      expect(received.some((f) => f.type === 'exec-exit')).toBe(false);
      server = await listen(port);
      const exit = await waitFor(() => received.find((f) => f.type === 'exec-exit'), 'the queued exit', 10_000);
      expect(exit).toMatchObject({ id: 'g1', status: 'ok' });
    } finally {
      await agent.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('execOnNode against a scripted gateway broker (in-process bus)', () => {
  const requester = { sub: 'rules', role: 'operator' as const };

  it("is `busy` when the gateway's broker is at its cap, an error for other refusals, and cancels on abort", async () => {
    const bus = new MemoryBus();
    const seen: { type?: string }[] = [];
    let answer: { ok: boolean; reason?: string } = { ok: false, reason: 'busy' };
    bus.subscribe(subjects.exec('gw-1'), (msg) => {
      const { frame } = JSON.parse(Buffer.from(msg.data).toString()) as { frame: { type: string } };
      seen.push(frame);
      if (msg.reply) bus.publish(msg.reply, Buffer.from(JSON.stringify(answer)));
    });
    const run = (options = {}) =>
      execOnNode(bus, { uid: 'n', gateway: 'gw-1', command: 'uptime', requester }, undefined, options).done;
    expect(await run()).toMatchObject({ status: 'busy', reason: 'busy' });
    answer = { ok: false, reason: 'duplicate request' };
    expect(await run()).toMatchObject({ status: 'error', reason: 'duplicate request' });
    // Accepted, then the caller aborts: an exec-cancel goes to the gateway's broker, and the call ends `cancelled`
    // (here nobody answers the cancel, so after the grace).
    answer = { ok: true };
    const abort = new AbortController();
    const done = run({ signal: abort.signal, graceMs: 50 });
    await waitFor(() => seen.length === 3, 'the third request');
    abort.abort();
    expect(await done).toMatchObject({ status: 'cancelled' });
    expect(seen.map((f) => f.type)).toEqual(['exec', 'exec', 'exec', 'exec-cancel']);
    // The caller's own timeout sends exec-cancel too.
    expect(await run({ defaultTimeoutMs: 20, graceMs: 20 })).toMatchObject({ status: 'timeout' });
    expect(seen.map((f) => f.type).slice(-2)).toEqual(['exec', 'exec-cancel']);
  });
});

describe('NodeLink (the agent and the test node share it)', () => {
  it('is refused, backs off and retries, opens, hands over messages, reconnects after a close, and stops', async () => {
    const { createServer } = await import('node:http');
    const { WebSocketServer } = await import('ws');
    const { NodeLink } = await import('../services/common/node-link.ts');
    const { silentLogger } = await import('../services/common/log.ts');
    const attempts: (string | undefined)[] = [];
    const closes: number[] = [];
    const wss = new WebSocketServer({ noServer: true });
    const server = createServer();
    server.on('upgrade', (req, socket, head) => {
      attempts.push(req.headers.authorization);
      // The first two attempts are refused before the upgrade, as a gateway refuses a bad token.
      if (attempts.length <= 2) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.on('close', (code) => closes.push(code));
        ws.send('hello');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const received: string[] = [];
    const closed: number[] = [];
    const link = new NodeLink(
      {
        url: () => `ws://127.0.0.1:${port}/node`,
        headers: () => ({ authorization: 'Bearer t0k' }),
        backoffInitialMs: 5,
        backoffMaxMs: 20,
        holdProcess: false,
        role: 'node',
        log: silentLogger(),
      },
      {
        open: () => undefined,
        message: (data) => received.push(data.toString()),
        closed: (code) => closed.push(code),
      },
    );
    try {
      expect(link.send('x')).toBe(false);
      link.start();
      await waitFor(() => link.connected && received.includes('hello'), 'the link open after two refusals');
      expect(attempts).toEqual(['Bearer t0k', 'Bearer t0k', 'Bearer t0k']);
      expect(link.opens).toBe(1);
      // The gateway restarts (1012): the link redials by itself.
      for (const ws of wss.clients) ws.close(1012, 'restart');
      await waitFor(() => link.opens === 2 && link.connected, 'the link back after the close');
      // The two refusals closed as 1006 (no handshake), then the gateway's 1012.
      expect(closed).toEqual([1006, 1006, 1012]);
      // A crash (no closing handshake) is redialled too.
      link.terminate();
      await waitFor(() => link.opens === 3 && link.connected, 'the link back after a crash');
      // stop() closes with the given code and redials no more.
      await link.stop(1001, 'going away', 1000);
      await waitFor(() => closes.includes(1001), 'the gateway to see 1001');
      const count = attempts.length;
      await settle(100);
      expect(attempts.length).toBe(count);
      expect(link.connected).toBe(false);
    } finally {
      await link.stop(1001, 'going away', 100);
      for (const ws of wss.clients) ws.terminate();
      await new Promise((r) => server.close(r));
    }
  });
});
