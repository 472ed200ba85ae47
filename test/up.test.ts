// `mycelium up --demo`: the whole system in one process, as a new user starts it.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readPrivateKey } from '../services/common/keys.ts';
import { mintToken } from '../services/common/tokens.ts';
import { freeUpPorts, launchUp, startUp, type UpProcess } from './helpers/up-process.ts';
import { waitFor } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';

const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;
const running: UpProcess[] = [];

afterEach(async () => {
  for (const up of running.splice(0)) await up.kill();
});

async function started(args: string[]): Promise<UpProcess> {
  const up = await startUp({ args });
  running.push(up);
  return up;
}

/** Ctrl-C: up stops every service and exits 0. */
async function interrupt(up: UpProcess): Promise<void> {
  up.child.kill('SIGINT');
  expect(await up.exited).toBe('code 0');
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
    const run = await started(['--demo']);
    const p = run.ports;
    const token = /#token=([\w.-]+)/.exec(run.out.stdout)?.[1];
    expect(token).toBeDefined();
    expect(run.out.stdout).toContain(`http://localhost:${p.dashboard}/#token=`);
    for (const port of [p.broker, p.ws, p.coap, p.mqtt]) expect(run.out.stdout).toContain(`:${port}`);
    // The login link's token is an operator token the broker accepts.
    const nodes = await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${p.broker}/api/v1/nodes`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const list = (await res.json()) as Array<{ uid: string; status: string; resources: Record<string, unknown> }>;
        return list.filter((n) => n.status === 'online' && 'led' in n.resources).length === 3 ? list : undefined;
      },
      'three demo nodes with an LED',
      20_000,
    );
    expect(nodes.map((n) => n.uid).sort()).toEqual(['demo-coap', 'demo-mqtt', 'demo-ws']);
    const write = await fetch(`http://127.0.0.1:${p.broker}/api/v1/nodes/demo-ws/resources/led`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
      body: '1',
    });
    expect(write.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${p.dashboard}/`)).status).toBe(200);
    await interrupt(run);
  }, 60_000);

  it('without --host, every port (broker, ws, MQTT, dashboard, CoAP UDP) is bound to 127.0.0.1 and refused on the external address', async () => {
    const run = await started([]);
    const p = run.ports;
    expect(run.out.stdout).toMatch(/Listening on: +127\.0\.0\.1 only/);
    const tcp = [p.broker, p.ws, p.mqtt, p.dashboard];
    if (process.platform === 'linux') {
      for (const port of tcp) expect(boundAddresses('tcp', port), `TCP ${port}`).toEqual(['0100007F']);
      expect(boundAddresses('udp', p.coap), `UDP ${p.coap}`).toEqual(['0100007F']);
    }
    for (const port of tcp) expect(await tryConnect('127.0.0.1', port)).toBe('connected');
    const external = externalAddress();
    if (external)
      for (const port of tcp) expect(await tryConnect(external, port), `${external}:${port}`).toBe('ECONNREFUSED');
    await interrupt(run);
  }, 60_000);

  it('up passes --max-token-ttl to broker and gateway (a longer token is refused 401); a token revoked with `mycelium token revoke` while its web client and its node are connected: both closed 4401 within 5 s, then refused 401', async () => {
    const run = await started([
      ...['--services', 'broker,ws', '--revocation-poll-ms', '200'],
      ...['--max-token-ttl', 'operator=15m,node=15m'],
    ]);
    const { home } = run;
    const p = run.ports;
    const cli = (args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, ...args], { env: { ...process.env, MYCELIUM_HOME: home } });
    // Minted in-process from the key `up` created (the CLI's minting is covered in test/tokens.test.ts).
    const key = readPrivateKey(join(home, 'key.pem'));
    const operator = await mintToken(key, { role: 'operator', sub: 'rev-op', ttlSeconds: 600 });
    const nodeToken = await mintToken(key, { role: 'node', sub: 'rev-node', ttlSeconds: 600 });
    // up hands its --max-token-ttl to the broker and the gateway: a 1-hour token is refused by both.
    const tooLong = await mintToken(key, { role: 'operator', sub: 'rev-op', ttlSeconds: 3600 });
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.broker}/ws`, tooLong)).rejects.toMatchObject({
      status: 401,
      body: 'token ttl-too-long',
    });
    const tooLongNode = await mintToken(key, { role: 'node', sub: 'rev-node', ttlSeconds: 3600 });
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.ws}/node`, tooLongNode)).rejects.toMatchObject({ status: 401 });
    const client = await TestPeer.connect(`ws://127.0.0.1:${p.broker}/ws`, operator);
    const node = await TestPeer.connect(`ws://127.0.0.1:${p.ws}/node`, nodeToken);
    // Each wait starts when its `token revoke` command has returned: the list is honoured within 5 s of that.
    await cli(['token', 'revoke', '--token', operator]);
    await waitFor(() => client.closeCode !== undefined, 'the web client closed', 5000);
    await cli(['token', 'revoke', '--token', nodeToken]);
    await waitFor(() => node.closeCode !== undefined, 'the node closed', 5000);
    expect(client.closeCode).toBe(4401);
    expect(node.closeCode).toBe(4401);
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.broker}/ws`, operator)).rejects.toMatchObject({
      status: 401,
      body: 'token revoked',
    });
    await expect(TestPeer.connect(`ws://127.0.0.1:${p.ws}/node`, nodeToken)).rejects.toMatchObject({
      status: 401,
    });
    await interrupt(run);
  }, 60_000);

  it('names the port and the flag when a port is taken', async () => {
    const p = await freeUpPorts();
    const blocker = createServer().listen(p.ws, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    try {
      const run = await launchUp({ ports: p });
      running.push(run);
      expect(await run.exited).toBe('code 2');
      expect(run.out.stderr).toContain(`port ${p.ws} is already in use`);
      expect(run.out.stderr).toContain('--ws-port');
    } finally {
      blocker.close();
    }
  }, 60_000);
});
