// Configuration, keys, tokens, the protocol module and the `mycelium` command itself.
import { execFile } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../services/common/config.ts';
import { extractToken, mintToken, parseDuration, verifyToken } from '../services/common/tokens.ts';
import { parseClientFrame, parseGatewayFrame } from '../services/protocol/frames.ts';
import { makeKeys } from './helpers/keys.ts';

const run = promisify(execFile);
const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;

describe('configuration', () => {
  const table = {
    port: { type: 'number', default: 8000, description: 'port' },
    brokerUrl: { type: 'list', default: ['ws://localhost:8000'], description: 'urls' },
    quiet: { type: 'boolean', default: false, description: 'quiet' },
  } as const;

  it('takes a CLI flag over the environment over the config file over the default', () => {
    const dir = mkdtempSync(join(tmpdir(), 'myc-cfg-'));
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'port: 7000\nbroker-url: [ws://file:1]\nquiet: true\n');
    expect(resolveConfig(table, [], {}).port).toBe(8000);
    expect(resolveConfig(table, ['--config', file], {}).port).toBe(7000);
    expect(resolveConfig(table, ['--config', file], { MYCELIUM_PORT: '6000' }).port).toBe(6000);
    expect(resolveConfig(table, ['--config', file, '--port', '5000'], { MYCELIUM_PORT: '6000' }).port).toBe(5000);
    expect(resolveConfig(table, ['--config', file], {}).brokerUrl).toEqual(['ws://file:1']);
    expect(resolveConfig(table, ['--broker-url', 'ws://a:1,ws://b:2'], {}).brokerUrl).toEqual(['ws://a:1', 'ws://b:2']);
    expect(resolveConfig(table, [], { MYCELIUM_QUIET: 'yes' }).quiet).toBe(true);
  });

  it('reports every problem at once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'myc-cfg-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ bogus: 1, port: 'x' }));
    expect(() => resolveConfig(table, ['--config', file], { MYCELIUM_QUIET: 'maybe' })).toThrow(
      /expected a number[\s\S]*expected true or false[\s\S]*unknown option "bogus"/,
    );
    expect(() => resolveConfig(table, ['--nope'], {})).toThrow(/Unknown option '--nope'/);
  });
});

describe('tokens', () => {
  const keys = makeKeys();

  it('round-trips role and subject, and refuses the wrong role', async () => {
    const token = await keys.token('operator', 'alice');
    expect(await verifyToken(keys.publicKey, token, ['operator'])).toEqual({
      ok: true,
      claims: { sub: 'alice', role: 'operator', exp: expect.any(Number), jti: expect.any(String) },
    });
    expect(await verifyToken(keys.publicKey, token, ['gateway'])).toEqual({ ok: false, reason: 'wrong-role' });
  });

  it('checks exp, nbf, iss, aud and the algorithm, with a small clock skew', async () => {
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: Record<string, unknown>, mutate?: (j: SignJWT) => SignJWT) => {
      let j = new SignJWT({ role: 'viewer', ...claims })
        .setProtectedHeader({ alg: 'EdDSA' })
        .setSubject('s')
        .setIssuer('mycelium')
        .setAudience('mycelium')
        .setExpirationTime(now + 60);
      if (mutate) j = mutate(j);
      return j.sign(keys.privateKey);
    };
    const v = (t: string) => verifyToken(keys.publicKey, t, ['viewer']);
    expect((await v(await sign({}))).ok).toBe(true);
    expect(await v(await sign({}, (j) => j.setExpirationTime(now - 10)))).toMatchObject({ ok: true }); // inside the skew
    expect(await v(await sign({}, (j) => j.setExpirationTime(now - 120)))).toEqual({ ok: false, reason: 'expired' });
    expect(await v(await sign({}, (j) => j.setNotBefore(now + 120)))).toEqual({ ok: false, reason: 'not-yet-valid' });
    expect(await v(await sign({}, (j) => j.setIssuer('someone-else')))).toEqual({ ok: false, reason: 'bad-claims' });
    expect(await v(await sign({}, (j) => j.setAudience('other')))).toEqual({ ok: false, reason: 'bad-claims' });
    expect(await v(await sign({ role: 'emperor' }))).toEqual({ ok: false, reason: 'bad-claims' });
    // alg "none" and HMAC tokens are refused: the algorithm is pinned.
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 's', role: 'admin', exp: now + 60 })).toString('base64url')}.`;
    expect((await v(none)).ok).toBe(false);
    expect(await v('garbage')).toEqual({ ok: false, reason: 'malformed' });
    expect(await v('')).toEqual({ ok: false, reason: 'missing' });
  });

  it('finds the token in a bearer header, a subprotocol pair or a query parameter', async () => {
    expect(extractToken({ authorization: 'Bearer abc' }, '/ws')).toEqual({ token: 'abc' });
    expect(extractToken({ 'sec-websocket-protocol': 'bearer, abc' }, '/ws')).toEqual({
      token: 'abc',
      subprotocol: 'bearer',
    });
    expect(extractToken({}, '/ws?x=1&token=abc')).toEqual({ token: 'abc' });
    expect(extractToken({}, '/ws')).toEqual({});
    expect(parseDuration('15m')).toBe(900);
    expect(parseDuration('2d')).toBe(172800);
    expect(parseDuration('soon')).toBeUndefined();
  });

  it('mints tokens that expire', async () => {
    const t = await mintToken(keys.privateKey, { role: 'viewer', sub: 'x', ttlSeconds: 60 });
    const payload = JSON.parse(Buffer.from(t.split('.')[1], 'base64url').toString());
    expect(payload.exp - payload.iat).toBe(60);
    expect(payload).toMatchObject({ iss: 'mycelium', aud: 'mycelium', role: 'viewer', sub: 'x' });
  });
});

describe('protocol frames', () => {
  it('accepts pyaiot client frames and rejects bad ones with the right code', () => {
    expect(parseClientFrame('{"type":"new","data":"client"}').ok).toBe(true);
    expect(parseClientFrame('{"type":"update","data":{"uid":"n","endpoint":"led","payload":"1"}}').ok).toBe(true);
    expect(parseClientFrame('{"type":"update","data":{"uid":"n","endpoint":"led"}}')).toMatchObject({
      ok: false,
      code: 'MYC_ERR_BAD_SHAPE',
    });
    expect(parseClientFrame('[1]')).toMatchObject({ ok: false, code: 'MYC_ERR_BAD_SHAPE', close: 1003 });
    expect(parseClientFrame('{"type":"constructor"}')).toMatchObject({ ok: false, code: 'MYC_ERR_BAD_TYPE' });
    expect(parseGatewayFrame('{"type":"update","uid":"a\\u0000b","endpoint":"x","data":1}')).toMatchObject({
      ok: false,
      code: 'MYC_ERR_BAD_SHAPE',
    });
    expect(parseGatewayFrame('{"type":"new","uid":""}')).toMatchObject({ ok: false, code: 'MYC_ERR_BAD_SHAPE' });
    expect(parseGatewayFrame('{"type":"result","id":"1","result":"ok"}').ok).toBe(true);
  });
});

describe('the mycelium command', () => {
  it('lists its subcommands, writes keys 0600 in a 0700 directory and prints a token alone on stdout', async () => {
    const home = join(mkdtempSync(join(tmpdir(), 'myc-home-')), 'nested');
    const env = { ...process.env, MYCELIUM_HOME: home };
    const help = await run(process.execPath, [BIN, '--help'], { env });
    expect(help.stdout).toMatch(/broker[\s\S]*token/);
    await run(process.execPath, [BIN, 'keys'], { env });
    expect(statSync(join(home, 'key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(home).mode & 0o777).toBe(0o700);
    const again = await run(process.execPath, [BIN, 'keys'], { env }).catch((e) => e);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('--force');
    const { stdout } = await run(process.execPath, [BIN, 'token', '--role', 'viewer', '--sub', 'me', '--ttl', '5m'], {
      env,
    });
    expect(stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const bad = await run(process.execPath, [BIN, 'token', '--role', 'king'], { env }).catch((e) => e);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--role must be one of[\s\S]*--sub is required/);
  });

  it('gives one clear line when the port is taken', async () => {
    const keys = makeKeys();
    const { createServer } = await import('node:net');
    const blocker = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as { port: number }).port;
    const res = await run(process.execPath, [
      BIN,
      'broker',
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--key-file',
      keys.keyFile,
    ]).catch((e) => e);
    blocker.close();
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`port ${port} is already in use`);
    expect(res.stderr).toContain('--port');
  });
});
