// Users over REST (docs/accounts.md, "Over REST"): POST /users, PUT /users/:name/role, PUT /users/:name/password,
// through a real broker and the accounts service. Attacks first: an admin of A reaching B's users, escalation to
// system admin, a device key named like a user, `__proto__`, oversized fields; then the paths that work.
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { type AccountsRig, startAccounts } from './helpers/accounts.ts';

const PW = 'a long enough password';
let rig: AccountsRig;
let orgA: string;
let adminA: string; // adam: admin of lab-a
let adminB: string; // bob: admin of lab-b
let root: string; // a system admin's sign-in

beforeAll(async () => {
  rig = await startAccounts();
  orgA = (await createOrg(rig.store, 'lab-a')).id;
  await createOrg(rig.store, 'lab-b');
  await addUser(rig.store, { name: 'adam', password: PW, org: 'lab-a', role: 'admin' });
  await addUser(rig.store, { name: 'vera', password: PW, org: 'lab-a', role: 'viewer' });
  await addUser(rig.store, { name: 'bob', password: PW, org: 'lab-b', role: 'admin' });
  await addUser(rig.store, { name: 'bert', password: PW, org: 'lab-b', role: 'viewer' });
  await addUser(rig.store, { name: 'root', password: PW, systemAdmin: true });
  adminA = await rig.signIn('adam', PW);
  adminB = await rig.signIn('bob', PW);
  root = await rig.signIn('root', PW);
}, 60_000);

afterAll(async () => {
  await rig?.stop();
});

const create = (token: string, body: unknown) => rig.http('POST', '/api/v1/users', { token, body });
const setRole = (token: string, name: string, body: unknown) =>
  rig.http('PUT', `/api/v1/users/${encodeURIComponent(name)}/role`, { token, body });
const setPassword = (token: string, name: string, body: unknown) =>
  rig.http('PUT', `/api/v1/users/${encodeURIComponent(name)}/password`, { token, body });

describe('users over REST: attacks', { timeout: 60_000 }, () => {
  it("an admin of A cannot create a user in B, nor change B's users (403/404), and B's users are untouched", async () => {
    const inB = await create(adminA, { username: 'mallory', password: PW, role: 'admin', org: 'lab-b' });
    expect(inB.status).toBe(403);
    expect(await rig.store.userByName('mallory')).toBeUndefined();
    const bert = await setRole(adminA, 'bert', { role: 'admin' });
    expect(bert.status).toBe(404);
    expect((await setRole(adminA, 'bert', { role: 'admin', org: 'lab-b' })).status).toBe(403);
    // A name that does not exist and one of another organisation answer alike.
    expect((await setRole(adminA, 'nobody-here', { role: 'admin' })).body).toEqual(bert.body);
    const bertId = (await rig.store.userByName('bert'))!.id;
    expect(await rig.store.memberships(bertId)).toEqual([
      expect.objectContaining({ orgName: 'lab-b', role: 'viewer' }),
    ]);
    expect((await setPassword(adminA, 'bert', { password: 'taken over by A' })).status).toBe(403);
  });

  it('an organisation admin cannot make or become a system admin; roles outside viewer/operator/admin are 400', async () => {
    const escalate = await create(adminA, { username: 'sneaky', password: PW, admin: true });
    expect(escalate.status).toBe(403);
    expect(await rig.store.userByName('sneaky')).toBeUndefined();
    for (const role of ['system', 'root', 'node', 'gateway', '__proto__', '']) {
      expect((await create(adminA, { username: 'sneaky', password: PW, role })).status).toBe(400);
      expect((await setRole(adminA, 'vera', { role })).status).toBe(400);
    }
    // The system admin's own membership is not an organisation admin's to change.
    expect((await setRole(adminA, 'root', { role: 'viewer' })).status).toBe(404);
    expect((await setPassword(adminA, 'root', { password: 'now it is mine' })).status).toBe(403);
    // A JSON body with a __proto__ key changes nothing either.
    const proto = await rig.http('POST', '/api/v1/users', {
      token: adminA,
      body: '{"username":"pp","password":"a long enough password","__proto__":{"admin":true}}',
    });
    expect(proto.status).toBe(201);
    expect((await rig.store.userByName('pp'))?.systemAdmin).toBe(false);
  });

  it('a viewer creates nobody and changes no role (not even their own); no token is 401', async () => {
    const vera = await rig.signIn('vera', PW);
    expect((await create(vera, { username: 'vnew', password: PW })).status).toBe(403);
    expect((await setRole(vera, 'vera', { role: 'admin' })).status).toBe(404);
    expect((await create('', { username: 'anon', password: PW })).status).toBe(401);
  });

  it('bad names and oversized fields are 400, never 500; a taken name is 409', async () => {
    const statuses = async (body: unknown) => (await create(adminA, body)).status;
    expect(await statuses({ username: '__proto__', password: PW })).toBe(400);
    expect(await statuses({ username: 'constructor', password: PW })).toBe(201); // an ordinary name
    expect(await statuses({ username: 'x'.repeat(101), password: PW })).toBe(400);
    expect(await statuses({ username: 'ok-name', password: 'p'.repeat(1025) })).toBe(400);
    expect(await statuses({ username: 'ok-name', password: 'short' })).toBe(400);
    expect(await statuses({ username: 'has space', password: PW })).toBe(400);
    expect(await statuses({ username: 'ok-name', password: PW, role: 'r'.repeat(10_000) })).toBe(400);
    expect(await statuses({ username: ['a'], password: PW })).toBe(400);
    expect(await statuses({ password: PW })).toBe(400);
    expect(await statuses({ username: 'vera', password: PW })).toBe(409);
    expect(await statuses({ username: 'bert', password: PW })).toBe(409); // names are global, as sign-in is
    expect((await setRole(adminA, '__proto__', { role: 'viewer' })).status).toBe(404);
    expect((await setRole(adminA, 'x'.repeat(101), { role: 'viewer' })).status).toBe(400);
    expect((await setPassword(root, '__proto__', { password: PW })).status).toBe(404);
    expect((await setPassword(root, 'vera', { password: 'p'.repeat(1025) })).status).toBe(400);
    expect(await rig.store.userByName('ok-name')).toBeUndefined();
  });

  it("a device key named like a user, or a token minted for the name, cannot change that user's password", async () => {
    const { text } = await createKey(rig.store, { orgId: orgA, role: undefined, node: 'vera' });
    const byKey = await setPassword(text, 'vera', { password: 'the device chose this', oldPassword: PW });
    expect(byKey.status).toBe(401); // a device key reads no REST route at all
    // `sub: vera` without vera's own token id (user.<her id>.…) is not vera, even with her old password.
    const minted = await rig.tb.keys.token('viewer', 'vera');
    const byName = await setPassword(minted, 'vera', { password: 'the minter chose this', oldPassword: PW });
    expect(byName.status).toBe(403);
    expect(await rig.signIn('vera', PW)).toBeTruthy();
  });
});

describe('users over REST: what works', { timeout: 60_000 }, () => {
  it('an organisation admin creates a member of their organisation, who signs in with that role', async () => {
    const made = await create(adminA, { username: 'olga', password: PW, role: 'operator' });
    expect(made.status).toBe(201);
    expect(made.body).toEqual({
      name: 'olga',
      systemAdmin: false,
      disabled: false,
      orgs: [{ org: 'lab-a', role: 'operator' }],
    });
    expect(JSON.stringify(made.body)).not.toContain('hash');
    expect(decodeJwt(await rig.signIn('olga', PW))).toMatchObject({ sub: 'olga', role: 'operator', org: orgA });
    // Naming their own organisation is fine; the default role is viewer.
    const named = await create(adminA, { username: 'vic', password: PW, org: 'lab-a' });
    expect(named.body).toMatchObject({ orgs: [{ org: 'lab-a', role: 'viewer' }] });
  });

  it('a system admin creates in any organisation and makes system admins; names the org or gets 400/404', async () => {
    const inB = await create(root, { username: 'bea', password: PW, role: 'operator', org: 'lab-b' });
    expect(inB.status).toBe(201);
    expect(inB.body).toMatchObject({ orgs: [{ org: 'lab-b', role: 'operator' }] });
    const sys = await create(root, { username: 'root2', password: PW, admin: true });
    expect(sys.body).toMatchObject({ name: 'root2', systemAdmin: true, orgs: [] });
    expect(decodeJwt(await rig.signIn('root2', PW)).org).toBeUndefined();
    expect((await create(root, { username: 'lost', password: PW })).status).toBe(400);
    expect((await create(root, { username: 'lost', password: PW, org: 'lab-z' })).status).toBe(404);
    // A hand-minted system-wide admin token (mycelium token --role admin) is a system admin too.
    const minted = await rig.tb.keys.token('admin', 'operator-root');
    expect((await create(minted, { username: 'made-by-cli', password: PW, org: 'lab-b' })).status).toBe(201);
  });

  it("an admin changes a member's role; the member's next refresh carries it", async () => {
    const first = await rig.http('POST', '/api/v1/login', { body: { username: 'vic', password: PW } });
    const changed = await setRole(adminA, 'vic', { role: 'operator' });
    expect(changed.status).toBe(200);
    expect(changed.body).toEqual({ name: 'vic', org: 'lab-a', role: 'operator' });
    const cookie = /myc_refresh=[^;]*/.exec(first.cookie ?? '')![0];
    const renewed = await rig.http('POST', '/api/v1/refresh', { headers: { cookie, 'x-mycelium-refresh': '1' } });
    expect(decodeJwt(renewed.body.accessToken as string)).toMatchObject({ sub: 'vic', role: 'operator' });
    // A system admin sets a role in a named organisation (making the user a member there).
    expect((await setRole(root, 'vic', { role: 'viewer', org: 'lab-b' })).body).toEqual({
      name: 'vic',
      org: 'lab-b',
      role: 'viewer',
    });
    expect((await setRole(root, 'vic', { role: 'viewer' })).status).toBe(400); // two organisations now: name one
    expect((await setRole(adminB, 'vic', { role: 'admin' })).status).toBe(200); // vic is B's member now
  });

  it('the user changes their own password with the old one; their refresh sessions end', async () => {
    const session = await rig.http('POST', '/api/v1/login', { body: { username: 'olga', password: PW } });
    const token = session.body.accessToken as string;
    const cookie = /myc_refresh=[^;]*/.exec(session.cookie ?? '')![0];
    expect((await setPassword(token, 'olga', { password: 'a new long password' })).status).toBe(403);
    expect(
      (await setPassword(token, 'olga', { password: 'a new long password', oldPassword: 'wrong one!' })).status,
    ).toBe(403);
    expect((await setPassword(token, 'olga', { password: 'short', oldPassword: PW })).status).toBe(400);
    const ok = await setPassword(token, 'olga', { password: 'a new long password', oldPassword: PW });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ name: 'olga', passwordChanged: true });
    const refreshed = await rig.http('POST', '/api/v1/refresh', { headers: { cookie, 'x-mycelium-refresh': '1' } });
    expect(refreshed.status).toBe(401);
    expect((await rig.http('POST', '/api/v1/login', { body: { username: 'olga', password: PW } })).status).toBe(401);
    expect(await rig.signIn('olga', 'a new long password')).toBeTruthy();
  });

  it("a system admin sets anyone's password without the old one; an organisation admin may not", async () => {
    expect((await setPassword(adminA, 'vera', { password: 'chosen by adam' })).status).toBe(403);
    const set = await setPassword(root, 'bert', { password: 'chosen by root' });
    expect(set.status).toBe(200);
    expect(await rig.signIn('bert', 'chosen by root')).toBeTruthy();
  });
});
