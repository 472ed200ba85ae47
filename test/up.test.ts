// `mycelium up --demo`: the whole system in one process, as a new user starts it.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { createSocket } from 'node:dgram';
import { mkdtempSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readPrivateKey } from '../services/common/keys.ts';
import { mintToken } from '../services/common/tokens.ts';
import { waitFor } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';

const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

function freeTcpPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function freeUdpPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createSocket('udp6');
    s.bind(0, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function ports() {
  return {
    port: await freeTcpPort(),
    ws: await freeTcpPort(),
    mqtt: await freeTcpPort(),
    dash: await freeTcpPort(),
    coap: await freeUdpPort(),
  };
}

function up(args: string[], home: string) {
  const child = spawn(process.execPath, [BIN, 'up', '--log-level', 'warn', ...args], {
    env: { ...process.env, MYCELIUM_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => {
    out.stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    out.stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out, exited };
}

/** The first address of this machine that is not loopback, if it has one. */
function externalAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address;
  return undefined;
}

/** Resolves with the connect error code, or 'connected'. */
function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 3000 });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('timeout', () => {
      s.destroy();
      resolve('timeout');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

/**
 * Local addresses of the sockets bound to `port` in /proc/net/{tcp,tcp6,udp,udp6} (Linux), as printed there:
 * 0100007F is 127.0.0.1, 00000000 is 0.0.0.0, 000...0 (32 digits) is ::.
 */
function boundAddresses(kind: 'tcp' | 'udp', port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const out: string[] = [];
  for (const file of [`/proc/net/${kind}`, `/proc/net/${kind}6`]) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const local = line.trim().split(/\s+/)[1];
      const state = line.trim().split(/\s+/)[3];
      // TCP: only listening sockets (state 0A); UDP sockets have no listen state.
      if (local?.endsWith(`:${hex}`) && (kind === 'udp' || state === '0A')) out.push(local.split(':')[0]);
    }
  }
  return out;
}

describe('mycelium up', () => {
  it('creates keys, starts every service with demo nodes, prints a login link, and stops cleanly on Ctrl-C', async () => {
    const home = mkdtempSync(join(tmpdir(), 'myc-up-'));
    const p = await ports();
    const run = up(
      [
        '--demo',
        '--port',
        String(p.port),
        '--ws-port',
        String(p.ws),
        '--coap-port',
        String(p.coap),
        '--mqtt-port',
        String(p.mqtt),
        '--dashboard-port',
        String(p.dash),
      ],
      home,
    );
    await waitFor(
      () => {
        if (run.child.exitCode !== null)
          throw new Error(`mycelium up exited with ${run.child.exitCode}: ${run.out.stderr}`);
        return run.out.stdout.includes('Press Ctrl-C');
      },
      'the banner',
      30_000,
    );
    const token = /#token=([\w.-]+)/.exec(run.out.stdout)?.[1];
    expect(token).toBeDefined();
    expect(run.out.stdout).toContain(`http://localhost:${p.dash}/#token=`);
    for (const port of [p.port, p.ws, p.coap, p.mqtt]) expect(run.out.stdout).toContain(`:${port}`);
    // The login link's token is an operator token the broker accepts.
    const nodes = await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${p.port}/api/v1/nodes`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const list = (await res.json()) as Array<{ uid: string; status: string; resources: Record<string, unknown> }>;
        return list.filter((n) => n.status === 'online' && 'led' in n.resources).length === 3 ? list : undefined;
      },
      'three demo nodes with an LED',
      20_000,
    );
    expect(nodes.map((n) => n.uid).sort()).toEqual(['demo-coap', 'demo-mqtt', 'demo-ws']);
    const write = await fetch(`http://127.0.0.1:${p.port}/api/v1/nodes/demo-ws/resources/led`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
      body: '1',
    });
    expect(write.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${p.dash}/`)).status).toBe(200);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  }, 60_000);

  it('without --host, every port (broker, ws, MQTT, dashboard, CoAP UDP) is bound to 127.0.0.1 and refused on the external address', async () => {
    const home = mkdtempSync(join(tmpdir(), 'myc-up-'));
    const p = await ports();
    const run = up(
      [
        '--port',
        String(p.port),
        '--ws-port',
        String(p.ws),
        '--coap-port',
        String(p.coap),
        '--mqtt-port',
        String(p.mqtt),
        '--dashboard-port',
        String(p.dash),
      ],
      home,
    );
    await waitFor(
      () => {
        if (run.child.exitCode !== null)
          throw new Error(`mycelium up exited with ${run.child.exitCode}: ${run.out.stderr}`);
        return run.out.stdout.includes('Press Ctrl-C');
      },
      'the banner',
      30_000,
    );
    expect(run.out.stdout).toMatch(/Listening on: +127\.0\.0\.1 only/);
    const tcp = [p.port, p.ws, p.mqtt, p.dash];
    if (process.platform === 'linux') {
      for (const port of tcp) expect(boundAddresses('tcp', port), `TCP ${port}`).toEqual(['0100007F']);
      expect(boundAddresses('udp', p.coap), `UDP ${p.coap}`).toEqual(['0100007F']);
    }
    for (const port of tcp) expect(await tryConnect('127.0.0.1', port)).toBe('connected');
    const external = externalAddress();
    if (external)
      for (const port of tcp) expect(await tryConnect(external, port), `${external}:${port}`).toBe('ECONNREFUSED');
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  }, 60_000);

  it('up passes --max-token-ttl to broker and gateway (a longer token is refused 401); a token revoked with `mycelium token revoke` while its web client and its node are connected: both closed 4401 within 5 s, then refused 401', async () => {
    const home = mkdtempSync(join(tmpdir(), 'myc-up-'));
    const p = await ports();
    const run = up(
      [
        '--services',
        'broker,ws',
        '--port',
        String(p.port),
        '--ws-port',
        String(p.ws),
        '--revocation-poll-ms',
        '200',
        '--max-token-ttl',
        'operator=15m,node=15m',
      ],
      home,
    );
    await waitFor(
      () => {
        if (run.child.exitCode !== null)
          throw new Error(`mycelium up exited with ${run.child.exitCode}: ${run.out.stderr}`);
        return run.out.stdout.includes('Press Ctrl-C');
      },
      'the banner',
      30_000,
    );
    const cli = (args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, ...args], { env: { ...process.env, MYCELIUM_HOME: home } });
    // Minted in-process from the key `up` created (the CLI's minting is covered in test/tokens.test.ts).
    const key = readPrivateKey(join(home, 'key.pem'));
    const operator = await mintToken(key, { role: 'operator', sub: 'rev-op', ttlSeconds: 600 });
    const nodeToken = await mintToken(key, { role: 'node', sub: 'rev-node', ttlSeconds: 600 });
    // up hands its --max-token-ttl to the broker and the gateway: a 1-hour token is refused by both.
    const tooLong = await mintToken(key, { role: 'operator', sub: 'rev-op', ttlSeconds: 3600 });
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.port}/ws`, tooLong)).rejects.toMatchObject({
      status: 401,
      body: 'token ttl-too-long',
    });
    const tooLongNode = await mintToken(key, { role: 'node', sub: 'rev-node', ttlSeconds: 3600 });
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.ws}/node`, tooLongNode)).rejects.toMatchObject({ status: 401 });
    const client = await TestPeer.connect(`ws://127.0.0.1:${p.port}/ws`, operator);
    const node = await TestPeer.connect(`ws://127.0.0.1:${p.ws}/node`, nodeToken);
    // Each wait starts when its `token revoke` command has returned: the list is honoured within 5 s of that.
    await cli(['token', 'revoke', '--token', operator]);
    await waitFor(() => client.closeCode !== undefined, 'the web client closed', 5000);
    await cli(['token', 'revoke', '--token', nodeToken]);
    await waitFor(() => node.closeCode !== undefined, 'the node closed', 5000);
    expect(client.closeCode).toBe(4401);
    expect(node.closeCode).toBe(4401);
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.port}/ws`, operator)).rejects.toMatchObject({
      status: 401,
      body: 'token revoked',
    });
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.ws}/node`, nodeToken)).rejects.toMatchObject({
      status: 401,
    });
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  }, 60_000);

  it('names the port and the flag when a port is taken', async () => {
    const home = mkdtempSync(join(tmpdir(), 'myc-up-'));
    const p = await ports();
    const blocker = createServer().listen(p.ws, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    try {
      const run = up(
        [
          '--port',
          String(p.port),
          '--ws-port',
          String(p.ws),
          '--coap-port',
          String(p.coap),
          '--mqtt-port',
          String(p.mqtt),
          '--dashboard-port',
          String(p.dash),
        ],
        home,
      );
      expect(await run.exited).toBe(2);
      expect(run.out.stderr).toContain(`port ${p.ws} is already in use`);
      expect(run.out.stderr).toContain('--ws-port');
    } finally {
      blocker.close();
    }
  }, 60_000);
});
