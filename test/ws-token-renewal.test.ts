// A renewed token on an open /ws session (the `token` frame): the broker verifies it as at the upgrade and takes it
// only for the same principal (same sub, same org); the session then lives to the new token's expiry. A refused
// token changes nothing (the session still ends at the old expiry with 4401); token frames are rate-limited.
// Real broker and accounts service (sign-in and refresh over HTTP), real WebSocket clients on port 0.
import { Writable } from 'node:stream';
import { decodeJwt } from 'jose';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Broker } from '../services/broker/broker.ts';
import { TOKEN_FRAME_BURST } from '../services/broker/client-session.ts';
import { addUser, createOrg } from '../services/accounts/admin.ts';
import { mintToken } from '../services/common/tokens.ts';
import { type AccountsRig, startAccounts } from './helpers/accounts.ts';
import { TEST_BROKER_CONFIG } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';

const PASSWORD = 'a long enough password';
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function peer(url: string, token: string): Promise<TestPeer> {
  const p = await TestPeer.connect(url, token);
  cleanups.push(() => p.close());
  return p;
}

const expiryMs = (token: string) => (decodeJwt(token).exp as number) * 1000;
const answer = (p: TestPeer, id: string) => p.next((f: Frame) => f.id === id, `the answer to ${id}`);

/** The accounts service with 2 s access tokens, lab-a (alice, bob) and lab-b. */
async function accounts(): Promise<AccountsRig & { orgA: string }> {
  const rig = await startAccounts({ accessTtlSeconds: 2 });
  cleanups.push(() => rig.stop());
  const orgA = (await createOrg(rig.store, 'lab-a')).id;
  await createOrg(rig.store, 'lab-b');
  await addUser(rig.store, { name: 'alice', password: PASSWORD, org: 'lab-a', role: 'operator' });
  await addUser(rig.store, { name: 'bob', password: PASSWORD, org: 'lab-a', role: 'operator' });
  return { ...rig, orgA };
}

/** Signs in and returns the access token and a function giving a renewed one (POST /refresh with the cookie). */
async function signIn(rig: AccountsRig, username: string): Promise<{ token: string; refresh(): Promise<string> }> {
  const res = await rig.http('POST', '/api/v1/login', { body: { username, password: PASSWORD } });
  expect(res.status).toBe(200);
  let cookie = /myc_refresh=[^;]*/.exec(res.cookie ?? '')?.[0] ?? '';
  return {
    token: res.body.accessToken as string,
    async refresh() {
      const r = await rig.http('POST', '/api/v1/refresh', { headers: { cookie, 'x-mycelium-refresh': '1' } });
      expect(r.status).toBe(200);
      cookie = /myc_refresh=[^;]*/.exec(r.cookie ?? '')?.[0] ?? '';
      return r.body.accessToken as string;
    },
  };
}

describe('token renewal on an open /ws session (accounts service)', { timeout: 30_000 }, () => {
  it('a renewed token keeps the session open past the first expiry; it then ends at the renewed expiry', async () => {
    const rig = await accounts();
    const alice = await signIn(rig, 'alice');
    const first = alice.token;
    const c = await peer(`${rig.tb.ws}/ws`, first);
    await c.register();
    // Renew twice, each time shortly before the token in force expires, as the dashboard does (exp is in whole
    // seconds: a token minted in the same second as the one it renews would end with it).
    await waitFor(() => Date.now() >= expiryMs(first) - 800, 'shortly before the first expiry', 3000);
    const second = await alice.refresh();
    c.send({ type: 'token', token: second, id: 't1' });
    expect(await answer(c, 't1')).toEqual({
      type: 'token-ok',
      id: 't1',
      role: 'operator',
      exp: expiryMs(second) / 1000,
    });
    await waitFor(() => Date.now() > expiryMs(first) + 500, 'past the first token expiry and a few sweeps', 5000);
    expect(c.closeCode).toBeUndefined();
    await waitFor(() => Date.now() >= expiryMs(second) - 800, 'shortly before the second expiry', 3000);
    const third = await alice.refresh();
    c.send({ type: 'token', token: third, id: 't2' });
    expect((await answer(c, 't2')).type).toBe('token-ok');
    await waitFor(() => Date.now() > expiryMs(second) + 500, 'past the second token expiry', 5000);
    expect(c.closeCode).toBeUndefined();
    // The sweep reads the renewed expiry: the session ends at the third token's, not before.
    expect(await c.closed(5000)).toEqual({ code: 4401, reason: 'token expired' });
    expect(Date.now()).toBeGreaterThanOrEqual(expiryMs(third));
  });

  it("another user's token, or the same user in another org or none, is refused; the session ends at the old expiry", async () => {
    const rig = await accounts();
    const alice = await signIn(rig, 'alice');
    const bob = await signIn(rig, 'bob');
    const c = await peer(`${rig.tb.ws}/ws`, alice.token);
    c.send({ type: 'token', token: bob.token, id: 'bob' });
    expect(await answer(c, 'bob')).toMatchObject({ type: 'error', code: 'MYC_ERR_FORBIDDEN' });
    const priv = rig.tb.keys.privateKey;
    const otherOrg = await mintToken(priv, { sub: 'alice', role: 'operator', org: 'lab-b', ttlSeconds: 60 });
    c.send({ type: 'token', token: otherOrg, id: 'other-org' });
    expect(await answer(c, 'other-org')).toMatchObject({ type: 'error', code: 'MYC_ERR_FORBIDDEN' });
    const noOrg = await mintToken(priv, { sub: 'alice', role: 'operator', ttlSeconds: 60 });
    c.send({ type: 'token', token: noOrg, id: 'no-org' });
    expect(await answer(c, 'no-org')).toMatchObject({ type: 'error', code: 'MYC_ERR_FORBIDDEN' });
    expect(rig.tb.broker.counters.rejected('token-other-principal').value).toBe(3);
    expect(await c.closed(5000)).toEqual({ code: 4401, reason: 'token expired' });
    expect(Date.now()).toBeGreaterThanOrEqual(expiryMs(alice.token));
    expect(Date.now()).toBeLessThan(expiryMs(bob.token) + 1000);
  });
});

describe('token renewal: refusals and bounds', { timeout: 30_000 }, () => {
  /** A broker with a revocation list (`mycelium token revoke`) and a log captured as written. */
  async function broker() {
    const keys = makeKeys();
    const revoked = new Set<string>();
    const lines: string[] = [];
    const log = pino(
      { level: 'debug' },
      new Writable({
        write(chunk, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    );
    const b = new Broker(TEST_BROKER_CONFIG, {
      publicKey: keys.publicKey,
      log,
      revocations: { isRevoked: (jti) => revoked.has(jti ?? '') },
    });
    await b.start();
    cleanups.push(() => b.stop());
    return { b, keys, revoked, lines, ws: `ws://127.0.0.1:${b.port}/ws` };
  }

  it('an expired, garbage, revoked or gateway token is refused with MYC_ERR_UNAUTHORIZED; the session keeps its token', async () => {
    const { b, keys, revoked, lines, ws } = await broker();
    const c = await peer(ws, await keys.token('operator', 'op', 60));
    const refusals: Array<[string, string, string]> = [
      ['expired', await mintToken(keys.privateKey, { sub: 'op', role: 'operator', ttlSeconds: -120 }), 'token expired'],
      ['garbage', 'not.a.token', 'token malformed'],
      ['gateway', await mintToken(keys.privateKey, { sub: 'op', role: 'gateway', ttlSeconds: 60 }), 'token wrong-role'],
      ['foreign', await makeKeys().token('operator', 'op'), 'token bad-signature'],
    ];
    const revokedToken = await keys.token('operator', 'op', 60);
    revoked.add(decodeJwt(revokedToken).jti as string);
    refusals.push(['revoked', revokedToken, 'token revoked']);
    for (const [id, token, reason] of refusals) {
      c.send({ type: 'token', token, id });
      expect(await answer(c, id)).toEqual({ type: 'error', code: 'MYC_ERR_UNAUTHORIZED', reason, id });
    }
    expect(c.closeCode).toBeUndefined();
    // Still the first token: it writes as an operator (no node: `unknown-node`, not `forbidden`).
    c.send({ type: 'update', id: 'w', data: { uid: 'n1', endpoint: 'led', payload: '1' } });
    expect(await answer(c, 'w')).toMatchObject({ type: 'result', reason: 'unknown-node' });
    // A token of another sub is logged as refused; no token text is in any line. (A new session: the five
    // refusals above spent this one's burst of token frames.)
    const d = await peer(ws, await keys.token('operator', 'op', 60));
    d.send({ type: 'token', token: await keys.token('operator', 'mallory', 60), id: 'mallory' });
    expect((await answer(d, 'mallory')).code).toBe('MYC_ERR_FORBIDDEN');
    await waitFor(() => lines.some((l) => l.includes('another principal')), 'the refusal logged');
    const all = lines.join('\n');
    expect(all).toContain('"tokenSub":"mallory"');
    expect(all).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
    expect(all).not.toContain('not.a.token');
    expect(b.counters.rejected('token-expired').value).toBe(1);
  });

  it('a lower role applies at once: an operator renewed as a viewer may no longer write', async () => {
    const { keys, ws } = await broker();
    const c = await peer(ws, await keys.token('operator', 'op', 60));
    c.send({ type: 'token', token: await keys.token('viewer', 'op', 60), id: 'down' });
    expect(await answer(c, 'down')).toMatchObject({ type: 'token-ok', role: 'viewer' });
    c.send({ type: 'update', id: 'w', data: { uid: 'n1', endpoint: 'led', payload: '1' } });
    expect(await answer(c, 'w')).toMatchObject({ type: 'error', code: 'MYC_ERR_FORBIDDEN' });
  });

  it('token frames are bounded: a burst is verified, the next one refused; a flood is closed with 1008', async () => {
    const { b, keys, ws } = await broker();
    const token = await keys.token('operator', 'op', 60);
    // One over the burst: the burst is verified and taken, the extra one answered MYC_ERR_RATE_LIMITED; still open.
    const c = await peer(ws, token);
    for (let i = 0; i <= TOKEN_FRAME_BURST; i++) c.send({ type: 'token', token, id: `b${i}` });
    expect(await answer(c, `b${TOKEN_FRAME_BURST}`)).toMatchObject({ code: 'MYC_ERR_RATE_LIMITED' });
    await waitFor(
      () => c.frames.filter((f) => f.type === 'token-ok').length === TOKEN_FRAME_BURST,
      'the burst verified',
    );
    expect(c.closeCode).toBeUndefined();
    // A flood: each refused frame is answered with its id; a burst's worth refused in a row closes the session,
    // and the verifications still queued are skipped.
    const d = await peer(ws, token);
    for (let i = 0; i < 50; i++) d.send({ type: 'token', token, id: `f${i}` });
    expect(await d.closed(5000)).toEqual({ code: 1008, reason: 'too many token frames' });
    const limited = d.frames.filter((f) => f.code === 'MYC_ERR_RATE_LIMITED');
    const refused = Array.from({ length: TOKEN_FRAME_BURST - 1 }, (_, i) => `f${TOKEN_FRAME_BURST + i}`);
    expect(limited.map((f) => f.id)).toEqual(refused);
    expect(d.frames.filter((f) => f.type === 'token-ok').length).toBeLessThanOrEqual(TOKEN_FRAME_BURST);
    expect(b.counters.rejected('token-rate-limited').value).toBe(1 + TOKEN_FRAME_BURST);
  });

  it('a token frame of the wrong shape closes the session like any bad frame (1003)', async () => {
    const { keys, ws } = await broker();
    const c = await peer(ws, await keys.token('operator', 'op', 60));
    c.send({ type: 'token', token: 'x'.repeat(5000) });
    expect((await c.closed(5000)).code).toBe(1003);
    const d = await peer(ws, await keys.token('operator', 'op', 60));
    d.send('{"type":"token","token":{"__proto__":"x"}}');
    expect((await d.closed(5000)).code).toBe(1003);
  });
});
