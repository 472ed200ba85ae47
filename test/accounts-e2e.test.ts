// The accounts layer end to end: a real broker and the accounts service on one bus, a SQLite database, real HTTP
// and WebSocket clients. Sign-in, refresh (CSRF), API keys on REST and /ws, revocation and disabled users closing
// open sessions (4401) within 5 s, the PIN flow, rate limits, and no secret in any log line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { decodeJwt } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { AccountsService } from '../services/accounts/service.ts';
import { AccountsStore } from '../services/accounts/store.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { Broker } from '../services/broker/broker.ts';
import { TEST_BROKER_CONFIG, type TestBroker } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';

/** Revocation must reach every path within this (the promise). */
const REVOCATION_MS = 5_000;
const ALICE_PASSWORD = 'alice has a long password';
const ROOT_PASSWORD = 'root has another long one';

/** Every log line of the broker and the service, as written (JSON), to grep for secrets. */
const logLines: string[] = [];
const capture = pino(
  {
    level: 'debug',
    redact: {
      paths: ['token', '*.token', 'password', '*.password', 'authorization', '*.authorization'],
      censor: '[redacted]',
    },
  },
  new Writable({
    write(chunk, _enc, done) {
      logLines.push(chunk.toString());
      done();
    },
  }),
);

const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-e2e-'));
const keys = makeKeys();
const bus = new MemoryBus();
let store: AccountsStore;
let service: AccountsService;
let tb: TestBroker;
let orgA: string;
const sockets: TestPeer[] = [];

beforeAll(async () => {
  await bus.start();
  // The service's own store; tests change the database through a second connection, as the CLI would.
  service = new AccountsService(
    { revocationPollMs: 100, limits: { loginPerAddress: { perSecond: 100, burst: 1000 } } },
    {
      bus,
      store: new AccountsStore(new SqliteDriver(join(dir, 'history.db'))),
      privateKey: keys.privateKey,
      log: capture,
    },
  );
  await service.start();
  store = new AccountsStore(new SqliteDriver(join(dir, 'history.db')));
  await store.open();
  orgA = (await createOrg(store, 'lab-a')).id;
  await createOrg(store, 'lab-b');
  await addUser(store, { name: 'alice', password: ALICE_PASSWORD, org: 'lab-a', role: 'operator' });
  await addUser(store, { name: 'adam', password: ALICE_PASSWORD, org: 'lab-a', role: 'admin' });
  await addUser(store, { name: 'vera', password: ALICE_PASSWORD, org: 'lab-a', role: 'viewer' });
  await addUser(store, { name: 'root', password: ROOT_PASSWORD, systemAdmin: true });
  // The broker logs to the capture too (the helper's broker is silent).
  const broker = new Broker(
    { ...TEST_BROKER_CONFIG, sessionSweepMs: 100 },
    { publicKey: keys.publicKey, log: capture, bus },
  );
  await broker.start();
  tb = {
    broker,
    keys,
    http: `http://127.0.0.1:${broker.port}`,
    ws: `ws://127.0.0.1:${broker.port}`,
    stop: () => broker.stop(),
  };
}, 60_000);

afterAll(async () => {
  for (const s of sockets) s.close();
  await tb?.stop();
  await service?.stop();
  await store?.close();
  await bus.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  body: Record<string, unknown>;
  cookie: string | null;
}

async function http(
  method: string,
  path: string,
  init: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const res = await fetch(`${tb.http}${path}`, {
    method,
    headers: {
      ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
      ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...init.headers,
    },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  const text = await res.text();
  return {
    status: res.status,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    cookie: res.headers.get('set-cookie'),
  };
}

const login = (username: string, password: string, extra: Record<string, string> = {}) =>
  http('POST', '/api/v1/login', { body: { username, password, ...extra } });

function refreshValue(cookie: string | null): string {
  const m = /myc_refresh=([^;]*)/.exec(cookie ?? '');
  if (m === null) throw new Error(`no refresh cookie in ${cookie}`);
  return m[1];
}

async function openWs(token: string): Promise<TestPeer> {
  const peer = await TestPeer.connect(`${tb.ws}/ws`, token);
  sockets.push(peer);
  await peer.register();
  return peer;
}

describe('accounts end to end', { timeout: 60_000 }, () => {
  it('signs in: an access token with the org and role, and an httpOnly SameSite=Strict refresh cookie', async () => {
    const res = await login('alice', ALICE_PASSWORD);
    expect(res.status).toBe(200);
    expect(res.body.expiresIn).toBe(900);
    const claims = decodeJwt(res.body.accessToken as string);
    expect(claims).toMatchObject({ sub: 'alice', role: 'operator', org: orgA });
    expect(res.cookie).toMatch(
      /^myc_refresh=myr_[0-9a-f]{16}_[A-Za-z0-9_-]{43}; Path=\/api\/v1\/; Max-Age=\d+; HttpOnly; SameSite=Strict$/,
    );
    expect((await http('GET', '/api/v1/nodes', { token: res.body.accessToken as string })).status).toBe(200);
    // A system admin acts system-wide: no org claim.
    const root = await login('root', ROOT_PASSWORD);
    expect(decodeJwt(root.body.accessToken as string)).toMatchObject({ role: 'admin' });
    expect(decodeJwt(root.body.accessToken as string).org).toBeUndefined();
  });

  it('refuses a wrong password and an unknown user alike, and bad bodies with 400', async () => {
    const wrong = await login('vera', 'not the password');
    const nobody = await login('nobody', 'not the password');
    expect(wrong.status).toBe(401);
    expect(nobody.status).toBe(401);
    expect(wrong.body).toEqual(nobody.body);
    expect((await login('vera', 'x'.repeat(2000))).status).toBe(400);
    expect((await http('POST', '/api/v1/login', { body: { username: 'vera' } })).status).toBe(400);
    expect((await http('POST', '/api/v1/login', { body: { username: ['a'], password: 'b' } })).status).toBe(400);
    const proto = await http('POST', '/api/v1/login', {
      body: JSON.parse('{"username":"__proto__","password":"x","__proto__":{"admin":true}}'),
    });
    expect(proto.status).toBe(401);
    expect((await login('vera\u0000', ALICE_PASSWORD)).status).toBe(401);
  });

  it('rate-limits sign-in per account: the 6th quick try is 429 even with the right password', async () => {
    await addUser(store, { name: 'target', password: ALICE_PASSWORD, org: 'lab-a', role: 'viewer' });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await login('target', 'guess number one')).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401]);
    expect((await login('target', ALICE_PASSWORD)).status).toBe(429);
  });

  it('refresh needs the custom header (CSRF), rotates the cookie, and a spent cookie is refused', async () => {
    const first = await login('vera', ALICE_PASSWORD);
    const cookie = `myc_refresh=${refreshValue(first.cookie)}`;
    const csrf = await http('POST', '/api/v1/refresh', { headers: { cookie } });
    expect(csrf.status).toBe(403);
    const renewed = await http('POST', '/api/v1/refresh', { headers: { cookie, 'x-mycelium-refresh': '1' } });
    expect(renewed.status).toBe(200);
    expect(decodeJwt(renewed.body.accessToken as string)).toMatchObject({ sub: 'vera', role: 'viewer', org: orgA });
    expect(refreshValue(renewed.cookie)).not.toBe(refreshValue(first.cookie));
    const replay = await http('POST', '/api/v1/refresh', { headers: { cookie, 'x-mycelium-refresh': '1' } });
    expect(replay.status).toBe(401);
    const next = `myc_refresh=${refreshValue(renewed.cookie)}`;
    expect(
      (await http('POST', '/api/v1/logout', { headers: { cookie: next, 'x-mycelium-refresh': '1' } })).status,
    ).toBe(200);
    expect(
      (await http('POST', '/api/v1/refresh', { headers: { cookie: next, 'x-mycelium-refresh': '1' } })).status,
    ).toBe(401);
    expect((await http('POST', '/api/v1/refresh', { headers: { 'x-mycelium-refresh': '1' } })).status).toBe(401);
  });

  it('an admin creates a key once; it works on REST and /ws; revoking it closes the session with 4401 within 5 s', async () => {
    const adam = (await login('adam', ALICE_PASSWORD)).body.accessToken as string;
    const vera = (await login('vera', ALICE_PASSWORD)).body.accessToken as string;
    expect((await http('POST', '/api/v1/keys', { token: vera, body: { role: 'viewer' } })).status).toBe(403);
    const created = await http('POST', '/api/v1/keys', { token: adam, body: { role: 'operator', label: 'script' } });
    expect(created.status).toBe(201);
    const text = created.body.text as string;
    expect(text).toMatch(/^myk_/);
    const id = (created.body.key as { id: string }).id;
    const listed = await http('GET', '/api/v1/keys', { token: adam });
    expect(JSON.stringify(listed.body)).toContain(id);
    expect(JSON.stringify(listed.body)).not.toContain(text.slice(21));
    expect(JSON.stringify(listed.body)).not.toContain('hash');
    expect((await http('GET', '/api/v1/nodes', { token: text })).status).toBe(200);
    const peer = await openWs(text);
    // A wrong key of the right shape, and a mangled one, are refused.
    expect((await http('GET', '/api/v1/nodes', { token: `${text.slice(0, -1)}A` })).status).toBe(401);
    expect((await http('GET', '/api/v1/nodes', { token: 'myk_nonsense' })).status).toBe(401);
    // Someone else's organisation cannot revoke it: root may (system-wide), an admin of lab-b would see 404.
    const revoked = await http('DELETE', `/api/v1/keys/${id}`, { token: adam });
    expect(revoked.body).toEqual({ id, revoked: true });
    const started = Date.now();
    expect((await peer.closed(REVOCATION_MS)).code).toBe(4401);
    expect(Date.now() - started).toBeLessThan(REVOCATION_MS);
    expect((await http('GET', '/api/v1/nodes', { token: text })).status).toBe(401);
    await expect(TestPeer.connect(`${tb.ws}/ws`, text)).rejects.toMatchObject({ status: 401 });
  });

  it("an admin of another organisation can neither list nor revoke lab-a's keys; bad bodies are 400", async () => {
    await addUser(store, { name: 'bob', password: ALICE_PASSWORD, org: 'lab-b', role: 'admin' });
    const bob = (await login('bob', ALICE_PASSWORD)).body.accessToken as string;
    const { key } = await createKey(store, { orgId: orgA, role: 'viewer' });
    const listed = await http('GET', '/api/v1/keys', { token: bob });
    expect(listed.status).toBe(200);
    expect(JSON.stringify(listed.body)).not.toContain(key.id);
    const revoke = await http('DELETE', `/api/v1/keys/${key.id}`, { token: bob });
    expect(revoke.status).toBe(404);
    expect((await store.apiKey(key.id))?.revoked).toBe(false);
    // Naming the other organisation does not help an organisation admin.
    expect((await http('POST', '/api/v1/keys', { token: bob, body: { role: 'viewer', org: 'lab-a' } })).status).toBe(
      403,
    );
    const bad = async (body: unknown) => (await http('POST', '/api/v1/keys', { token: bob, body })).status;
    expect(await bad({ role: 'root' })).toBe(400);
    expect(await bad({ node: '__proto__' })).toBe(400);
    expect(await bad({ role: 'viewer', label: 'a\u0007b' })).toBe(400);
    expect(await bad({ role: 'viewer', ttlSeconds: -5 })).toBe(400);
    expect(await bad(JSON.parse('{"role":"viewer","__proto__":{"org":"lab-a"}}'))).toBe(201);
    expect((await http('DELETE', '/api/v1/keys/not-an-id', { token: bob })).status).toBe(400);
    let deep: unknown = 'x';
    for (let i = 0; i < 100; i++) deep = [deep];
    expect(await bad({ role: 'viewer', label: deep })).toBe(400);
  });

  it('organisations and users over REST: each admin sees and disables only their own', async () => {
    const alice = (await login('alice', ALICE_PASSWORD)).body.accessToken as string;
    const adam = (await login('adam', ALICE_PASSWORD)).body.accessToken as string;
    const root = (await login('root', ROOT_PASSWORD)).body.accessToken as string;
    const names = (r: Answer) => (r.body.orgs as Array<{ name: string }>).map((o) => o.name);
    expect(names(await http('GET', '/api/v1/orgs', { token: alice }))).toEqual(['lab-a']);
    expect(names(await http('GET', '/api/v1/orgs', { token: root }))).toEqual(
      expect.arrayContaining(['lab-a', 'lab-b']),
    );
    expect((await http('POST', '/api/v1/orgs', { token: adam, body: { name: 'lab-c' } })).status).toBe(403);
    expect((await http('POST', '/api/v1/orgs', { token: root, body: { name: 'lab-c' } })).status).toBe(201);
    expect((await http('POST', '/api/v1/orgs', { token: root, body: { name: 'lab-c' } })).status).toBe(400);
    expect((await http('POST', '/api/v1/orgs', { token: root, body: { name: '__proto__' } })).status).toBe(400);
    expect((await http('GET', '/api/v1/users', { token: alice })).status).toBe(403);
    const users = await http('GET', '/api/v1/users', { token: adam });
    const listed = (users.body.users as Array<{ name: string }>).map((u) => u.name);
    expect(listed).toContain('alice');
    expect(listed).not.toContain('root');
    expect(JSON.stringify(users.body)).not.toContain('argon2');
    // An admin of lab-a cannot touch someone outside it, nor a system admin.
    await addUser(store, { name: 'outsider', password: ALICE_PASSWORD, org: 'lab-b', role: 'viewer' });
    expect(
      (await http('PUT', '/api/v1/users/outsider/disabled', { token: adam, body: { disabled: true } })).status,
    ).toBe(404);
    expect((await http('PUT', '/api/v1/users/root/disabled', { token: adam, body: { disabled: true } })).status).toBe(
      404,
    );
    // Disabling a member closes their open session with 4401.
    await addUser(store, { name: 'member', password: ALICE_PASSWORD, org: 'lab-a', role: 'viewer' });
    const peer = await openWs((await login('member', ALICE_PASSWORD)).body.accessToken as string);
    const off = await http('PUT', '/api/v1/users/member/disabled', { token: adam, body: { disabled: true } });
    expect(off.body).toEqual({ name: 'member', disabled: true });
    expect((await peer.closed(REVOCATION_MS)).code).toBe(4401);
    expect((await login('member', ALICE_PASSWORD)).status).toBe(401);
    expect(
      (await http('PUT', '/api/v1/users/member/disabled', { token: adam, body: { disabled: false } })).status,
    ).toBe(200);
    expect((await login('member', ALICE_PASSWORD)).status).toBe(200);
  });

  it('a key revoked in the database (mycelium key revoke) is refused on REST and /ws within 5 s', async () => {
    const { key, text } = await createKey(store, { orgId: orgA, role: 'viewer' });
    expect((await http('GET', '/api/v1/nodes', { token: text })).status).toBe(200);
    const peer = await openWs(text);
    await store.revokeApiKey(key.id);
    expect((await peer.closed(REVOCATION_MS)).code).toBe(4401);
    await waitFor(
      async () => (await http('GET', '/api/v1/nodes', { token: text })).status === 401,
      'REST refusal',
      REVOCATION_MS,
    );
  });

  it('a disabled user: open sessions closed with 4401, tokens and refresh refused within 5 s', async () => {
    await addUser(store, { name: 'dora', password: ALICE_PASSWORD, org: 'lab-a', role: 'viewer' });
    const signed = await login('dora', ALICE_PASSWORD);
    const token = signed.body.accessToken as string;
    const peer = await openWs(token);
    const user = await store.userByName('dora');
    await store.setDisabled(user!.id, true);
    expect((await peer.closed(REVOCATION_MS)).code).toBe(4401);
    expect((await http('GET', '/api/v1/nodes', { token })).status).toBe(401);
    const cookie = `myc_refresh=${refreshValue(signed.cookie)}`;
    expect((await http('POST', '/api/v1/refresh', { headers: { cookie, 'x-mycelium-refresh': '1' } })).status).toBe(
      401,
    );
    expect((await login('dora', ALICE_PASSWORD)).status).toBe(401);
  });

  it('PIN flow: anonymous PIN, pending polls, claimed by an operator, the key delivered exactly once', async () => {
    const made = await http('POST', '/api/v1/pins');
    expect(made.status).toBe(201);
    const pin = made.body.pin as string;
    const secret = made.body.secret as string;
    expect(pin).toMatch(/^\d{6}$/);
    const poll = (s = secret) => http('GET', `/api/v1/pins/${pin}`, { headers: { 'x-pin-secret': s } });
    expect((await poll()).body).toEqual({ status: 'pending' });
    // A guesser who has the PIN but not the secret learns nothing.
    expect((await poll('wrong')).status).toBe(404);
    const vera = (await login('vera', ALICE_PASSWORD)).body.accessToken as string;
    const alice = (await login('alice', ALICE_PASSWORD)).body.accessToken as string;
    expect((await http('POST', `/api/v1/pins/${pin}/claim`, { token: vera, body: { node: 'dev-1' } })).status).toBe(
      403,
    );
    const bad = await http('POST', `/api/v1/pins/${pin}/claim`, { token: alice, body: { node: '__proto__' } });
    expect(bad.status).toBe(400);
    const claimed = await http('POST', `/api/v1/pins/${pin}/claim`, { token: alice, body: { node: 'dev-1' } });
    expect(claimed.status).toBe(200);
    expect((await http('POST', `/api/v1/pins/${pin}/claim`, { token: alice, body: { node: 'dev-2' } })).status).toBe(
      404,
    );
    const delivered = await poll();
    expect(delivered.body).toMatchObject({ status: 'claimed', node: 'dev-1' });
    const keyText = delivered.body.key as string;
    expect(keyText).toMatch(/^myk_/);
    expect((await poll()).status).toBe(410);
    const row = await store.apiKey(keyText.slice(4, 20));
    expect(row).toMatchObject({ role: 'node', nodeUid: 'dev-1', orgId: orgA });
    // A device key is not a client credential.
    expect((await http('GET', '/api/v1/nodes', { token: keyText })).status).toBe(401);
    expect((await http('GET', '/api/v1/pins/12', {})).status).toBe(400);
  });

  it('rate-limits PIN requests per address', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await http('POST', '/api/v1/pins')).status);
    expect(statuses).toContain(429);
  });

  it('invitations: an admin invites, the link is logged (no SMTP), it makes a member once', async () => {
    const adam = (await login('adam', ALICE_PASSWORD)).body.accessToken as string;
    const vera = (await login('vera', ALICE_PASSWORD)).body.accessToken as string;
    expect((await http('POST', '/api/v1/invitations', { token: vera, body: { email: 'x@lab.org' } })).status).toBe(403);
    expect((await http('POST', '/api/v1/invitations', { token: adam, body: { email: 'not-an-address' } })).status).toBe(
      400,
    );
    const made = await http('POST', '/api/v1/invitations', {
      token: adam,
      body: { email: 'ines@lab.org', role: 'operator' },
    });
    expect(made.status).toBe(201);
    const invitation = made.body.invitation as string;
    expect(invitation).toMatch(/^myi_/);
    expect(logLines.some((l) => l.includes(invitation) && l.includes('ines@lab.org'))).toBe(true);
    const accept = (username: string, text = invitation) =>
      http('POST', '/api/v1/invitations/accept', { body: { invitation: text, username, password: ALICE_PASSWORD } });
    expect((await accept('ines', `${invitation.slice(0, -1)}x`)).status).toBe(404);
    expect((await accept('alice')).status).toBe(409);
    const joined = await accept('ines');
    expect(joined.status).toBe(201);
    expect(joined.body).toEqual({ username: 'ines', org: 'lab-a', role: 'operator' });
    expect((await accept('ines2')).status).toBe(404);
    const signed = await login('ines', ALICE_PASSWORD);
    expect(decodeJwt(signed.body.accessToken as string)).toMatchObject({ role: 'operator', org: orgA });
  });

  it('no log line holds a password, a key, a refresh credential or a PIN secret', async () => {
    const signed = await login('alice', ALICE_PASSWORD);
    const adam = (await login('adam', ALICE_PASSWORD)).body.accessToken as string;
    const key = (await http('POST', '/api/v1/keys', { token: adam, body: { role: 'viewer' } })).body.text as string;
    await http('GET', '/api/v1/nodes', { token: `${key.slice(0, -2)}xx` });
    await login('alice', 'a wrong password it is');
    const secrets = [
      ALICE_PASSWORD,
      ROOT_PASSWORD,
      key.slice(21),
      refreshValue(signed.cookie).slice(21),
      'a wrong password it is',
    ];
    expect(logLines.length).toBeGreaterThan(10);
    const all = logLines.join('');
    for (const s of secrets) expect(all).not.toContain(s);
    expect(all).toContain('login failed');
    expect(all).toContain('connection refused'); // the broker's own lines are in the capture too
  });
});
