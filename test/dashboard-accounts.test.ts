// The dashboard's accounts pages in real headless Chromium: a real broker and accounts service (SQLite in a
// temporary directory) on one bus, two organisations with a real WebSocket gateway and a node each, and the
// dashboard service serving the built page from its own origin, which the broker lists in --dashboard-origin.
// Sign-in (wrong and right), the user's organisation only, silent renewal past the access token's lifetime, API
// keys created once and revoked, a PIN claimed for a device's poll, and sign-out ending the refresh cookie.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { renewDelayMs } from '../dashboard/src/account-session.ts';
import { keyState, type KeyView } from '../dashboard/src/keys-page.ts';
import { buildDashboard } from '../dashboard/server/build.ts';
import { DashboardServer } from '../dashboard/server/server.ts';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { AccountsService } from '../services/accounts/service.ts';
import { AccountsStore } from '../services/accounts/store.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { silentLogger } from '../services/common/log.ts';
import { launchBrowser, openPage, type PageWatch, screenshot } from './helpers/browser.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import type { TestPeer } from './helpers/ws-client.ts';
import { rawNode, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';

const UI_TIMEOUT_MS = 10_000;
const PASSWORD = 'a long enough password';

let browser: Browser;
let distDir: string;
const dir = mkdtempSync(join(tmpdir(), 'myc-dash-accounts-'));
let cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

beforeAll(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'myc-dash-accounts-dist-'));
  await buildDashboard(distDir);
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  rmSync(distDir, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

interface System {
  tb: TestBroker;
  dash: DashboardServer;
  store: AccountsStore;
  nodeA: TestPeer;
}

let dbSeq = 0;
/**
 * Two organisations, users of lab-a (alice operator, adam admin, vera viewer), a gateway and a node in each, the
 * accounts service with `accessTtlSeconds`, and the dashboard. The broker must list the dashboard's origin, which
 * is known only once the dashboard listens, and the dashboard must know the broker's URL: a first broker takes a
 * port, the dashboard starts with it, and the real broker starts on that port with the origin (as the dashboard
 * test restarts a broker on its port).
 */
async function system(accessTtlSeconds = 900, listed = true): Promise<System> {
  const keys = makeKeys();
  const bus = new MemoryBus();
  await bus.start();
  cleanup(() => bus.stop());
  const db = join(dir, `accounts-${++dbSeq}.db`);
  const store = new AccountsStore(new SqliteDriver(db));
  await store.open();
  cleanup(() => store.close());
  const service = new AccountsService(
    { accessTtlSeconds, revocationPollMs: 100 },
    { bus, store: new AccountsStore(new SqliteDriver(db)), privateKey: keys.privateKey, log: silentLogger() },
  );
  await service.start();
  cleanup(() => service.stop());
  const orgA = (await createOrg(store, 'lab-a')).id;
  const orgB = (await createOrg(store, 'lab-b')).id;
  await addUser(store, { name: 'alice', password: PASSWORD, org: 'lab-a', role: 'operator' });
  await addUser(store, { name: 'adam', password: PASSWORD, org: 'lab-a', role: 'admin' });
  await addUser(store, { name: 'vera', password: PASSWORD, org: 'lab-a', role: 'viewer' });
  await addUser(store, { name: 'root', password: PASSWORD, systemAdmin: true });

  const placeholder = await startBroker({}, keys, bus);
  const port = placeholder.broker.port;
  const dash = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl: placeholder.ws, title: 'Accounts test', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  await dash.start();
  cleanup(() => dash.stop());
  await placeholder.stop();
  const tb = await startBroker({ port, sessionSweepMs: 100, dashboardOrigin: listed ? [dash.url] : [] }, keys, bus);
  cleanup(() => tb.stop());

  const gwA = await startWsGateway(tb, cleanup, {
    token: (await createKey(store, { orgId: orgA, role: undefined, gateway: 'gw-a' })).text,
    gatewayId: 'gw-a',
  });
  const gwB = await startWsGateway(tb, cleanup, {
    token: (await createKey(store, { orgId: orgB, role: undefined, gateway: 'gw-b' })).text,
    gatewayId: 'gw-b',
  });
  const nodeA = await rawNode(gwA, cleanup, await keys.token('node', 'node-a'));
  const nodeB = await rawNode(gwB, cleanup, await keys.token('node', 'node-b'));
  nodeA.send({ type: 'update', data: { name: 'Lab A sensor', led: '0' } });
  nodeB.send({ type: 'update', data: { name: 'Lab B sensor', led: '0' } });
  const admin = await fetch(`${tb.http}/api/v1/nodes`, {
    headers: { authorization: `Bearer ${await keys.token('admin', 'root')}` },
  });
  expect(admin.status).toBe(200);
  await waitFor(async () => {
    const res = await fetch(`${tb.http}/api/v1/nodes`, {
      headers: { authorization: `Bearer ${await keys.token('admin', 'root')}` },
    });
    return ((await res.json()) as unknown[]).length === 2;
  }, 'both nodes known to the broker');
  return { tb, dash, store, nodeA };
}

async function open(s: System): Promise<{ page: Page; context: BrowserContext; watch: PageWatch }> {
  const opened = await openPage(browser);
  cleanup(() => opened.context.close());
  await opened.page.goto(s.dash.url);
  await opened.page.waitForSelector('#signin-user', { timeout: UI_TIMEOUT_MS });
  return opened;
}

async function signIn(p: Page, user: string, password = PASSWORD): Promise<void> {
  await p.fill('#signin-user', user);
  await p.fill('#signin-password', password);
  await p.click('#signin-submit');
}

const card = (uid: string) => `article.card[data-uid="${uid}"]`;

async function waitText(p: Page, selector: string, pred: (t: string) => boolean, what: string): Promise<string> {
  return waitFor(
    async () => {
      const t = await p.$eval(selector, (el) => el.textContent ?? '').catch(() => undefined);
      return t !== undefined && pred(t) ? t : undefined;
    },
    what,
    UI_TIMEOUT_MS,
  );
}

/** Everything the page keeps in storage, as one string (no token, no password may be in it). */
const storage = (p: Page) =>
  p.evaluate(() => JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage } }));

const refreshCookie = async (context: BrowserContext) =>
  (await context.cookies()).find((c) => c.name === 'myc_refresh' && c.value !== '');

async function rest(tb: TestBroker, method: string, path: string, init: { token?: string; headers?: object } = {}) {
  const res = await fetch(`${tb.http}${path}`, {
    method,
    headers: { ...(init.token ? { authorization: `Bearer ${init.token}` } : {}), ...init.headers },
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}

describe('dashboard accounts', { timeout: 90_000 }, () => {
  it('a wrong password shows the error and yields no token; nothing secret is stored', async () => {
    const s = await system();
    const { page: p, context, watch } = await open(s);
    await signIn(p, 'alice', 'not the password at all');
    await waitText(p, '#signin-message', (t) => t.includes('wrong user name or password'), 'the refusal');
    expect(await p.inputValue('#signin-password')).toBe('');
    expect(await p.isVisible('#login')).toBe(true);
    expect(await p.textContent('#role')).toBe('');
    expect(await refreshCookie(context)).toBeUndefined();
    const kept = await storage(p);
    expect(kept).not.toContain('not the password');
    expect(kept).not.toContain('mycelium.token');
    expect(watch.errors.join('\n')).not.toContain('not the password');
    expect(watch.dialogs).toEqual([]);
  });

  it("signs in: only the user's organisation's nodes, who and role shown, no token stored, resumed on reload", async () => {
    const s = await system();
    const { page: p, context } = await open(s);
    await signIn(p, 'alice');
    await waitText(p, `${card('node-a')} .card-title`, (t) => t === 'Lab A sensor', "lab-a's node");
    await waitText(p, '#conn', (t) => t === 'Live', 'live');
    expect(await p.$(card('node-b'))).toBeNull();
    await waitText(p, '#account-who', (t) => t === 'alice · lab-a', 'who is signed in');
    expect(await p.textContent('#role')).toBe('operator');
    expect(await p.isHidden('#login')).toBe(true);
    expect(await p.inputValue('#signin-password')).toBe('');
    const cookie = await refreshCookie(context);
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/api/v1/' });
    const kept = await storage(p);
    expect(kept).not.toContain(PASSWORD);
    expect(kept).not.toMatch(/eyJ|myr_/); // neither the access token nor the refresh credential
    expect(kept).toContain('"mycelium.account":"1"');
    // A reload asks nothing: the cookie gives a new token (and rotates), and the page opens one WebSocket with it.
    const sockets: string[] = [];
    p.on('websocket', (ws) => sockets.push(ws.url()));
    await p.reload();
    await waitText(p, '#account-who', (t) => t === 'alice · lab-a', 'signed in again after the reload');
    await waitText(p, `${card('node-a')} .card-title`, (t) => t === 'Lab A sensor', "lab-a's node again");
    await waitText(p, '#conn', (t) => t === 'Live', 'live after the reload');
    expect(sockets).toHaveLength(1);
    expect((await refreshCookie(context))?.value).not.toBe(cookie?.value);
    await screenshot(p, 'dashboard-accounts-signed-in');
  });

  it('renews the access token silently: the page stays live past several lifetimes', async () => {
    const ttlS = 3;
    const s = await system(ttlS);
    const { page: p } = await open(s);
    const refreshes: number[] = [];
    let signedIn = 0;
    p.on('request', (r) => {
      if (r.url().endsWith('/api/v1/refresh') && r.method() === 'POST') refreshes.push(Date.now());
    });
    p.on('response', (r) => {
      if (r.url().endsWith('/api/v1/login') && r.status() === 200) signedIn = Date.now();
    });
    const signedAt = Date.now();
    await signIn(p, 'alice');
    await waitText(p, `${card('node-a')} .card-title`, (t) => t === 'Lab A sensor', "lab-a's node");
    // Renewed before the first token expired (the timer), not only after the broker ended the session (4401).
    await waitFor(() => refreshes.length >= 1, 'the first renewal', 2 * ttlS * 1000);
    expect(signedIn).toBeGreaterThan(0);
    expect(refreshes[0] - signedIn).toBeLessThan(ttlS * 1000);
    // Past three lifetimes of the first token, renewed at least twice.
    await waitFor(
      () => refreshes.length >= 2 && Date.now() > signedAt + 3 * ttlS * 1000,
      'three token lifetimes with renewals',
      6 * ttlS * 1000,
    );
    expect(await p.isHidden('#login')).toBe(true);
    await waitText(p, '#conn', (t) => t === 'Live', 'still live');
    // The WebSocket carries live values with the renewed token, and REST takes it too.
    s.nodeA.send({ type: 'update', data: { led: '1' } });
    await waitFor(
      async () =>
        (await p.$eval(`${card('node-a')} [data-endpoint="led"]`, (el) => el.textContent ?? '')).includes('ON'),
      'the live value after renewals',
      UI_TIMEOUT_MS,
    );
    await p.click('#account-open');
    await waitFor(
      async () => (await p.$$eval('#pin-org option', (o) => o.map((x) => x.textContent))).includes('lab-a'),
      'the organisations read with the renewed token',
      UI_TIMEOUT_MS,
    );
    expect(await p.textContent('#account-identity')).toBe('Signed in as alice · lab-a · operator');
  });

  it('an admin creates a key (shown once, listed without its text) and revokes it (then refused)', async () => {
    const s = await system();
    const { page: p } = await open(s);
    await signIn(p, 'adam');
    await waitText(p, '#role', (t) => t === 'admin', 'the admin role');
    await p.click('#account-open');
    await p.waitForSelector('#keys-page:not([hidden])', { timeout: UI_TIMEOUT_MS });
    await p.selectOption('#key-role', 'viewer');
    await p.fill('#key-label', 'grafana <b>board</b>');
    await p.click('#key-create-submit');
    await p.waitForSelector('#key-text', { timeout: UI_TIMEOUT_MS });
    const text = await p.inputValue('#key-text');
    expect(text).toMatch(/^myk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(await p.textContent('#key-warning')).toContain('shown only once');
    const id = text.slice(4, 20);
    await p.waitForSelector(`tr[data-key="${id}"][data-state="active"]`, { timeout: UI_TIMEOUT_MS });
    // The label is text, never markup; the list holds no key text.
    expect(await p.$('#keys-table b')).toBeNull();
    expect(await p.textContent(`tr[data-key="${id}"]`)).toContain('grafana <b>board</b>');
    expect(await p.textContent('#keys-table')).not.toContain(text.slice(21));
    expect((await rest(s.tb, 'GET', '/api/v1/nodes', { token: text })).status).toBe(200);
    // Done wipes it: it is nowhere in the page any more.
    await p.click('#key-done');
    await p.waitForSelector('#key-text', { state: 'detached', timeout: UI_TIMEOUT_MS });
    expect(await p.content()).not.toContain(text.slice(21));

    await p.click(`tr[data-key="${id}"] .key-revoke`);
    await p.click(`tr[data-key="${id}"] .key-revoke-confirm`);
    await p.waitForSelector(`tr[data-key="${id}"][data-state="revoked"]`, { timeout: UI_TIMEOUT_MS });
    await waitText(p, '#keys-status', (t) => t.includes('revoked'), 'the revocation said');
    await waitFor(
      async () => (await rest(s.tb, 'GET', '/api/v1/nodes', { token: text })).status === 401,
      'the revoked key refused',
      5_000,
    );
  });

  it("claims a device's PIN for lab-a: the device's poll gets its key; a wrong PIN shows the error", async () => {
    const s = await system();
    const made = await rest(s.tb, 'POST', '/api/v1/pins');
    expect(made.status).toBe(201);
    const { pin, secret } = made.body as { pin: string; secret: string };
    const { page: p } = await open(s);
    await signIn(p, 'alice');
    await waitText(p, '#account-who', (t) => t === 'alice · lab-a', 'signed in');
    await p.click('#account-open');
    await p.waitForSelector('#pin-claim:not([hidden])', { timeout: UI_TIMEOUT_MS });
    // An operator manages no keys.
    expect(await p.isHidden('#keys-page')).toBe(true);
    await waitFor(
      async () => (await p.$$eval('#pin-org option', (o) => o.map((x) => x.textContent))).join() === 'lab-a',
      'the organisation choice',
      UI_TIMEOUT_MS,
    );
    await p.fill('#pin-code', '000000');
    await p.fill('#pin-node', 'sensor-7');
    await p.click('#pin-submit');
    await waitText(p, '#pin-result', (t) => t.startsWith('Not claimed:') && t.includes('404'), 'the refusal');
    await p.fill('#pin-code', pin);
    await p.click('#pin-submit');
    await waitText(p, '#pin-result', (t) => t.includes(`PIN ${pin} claimed`) && t.includes('sensor-7'), 'claimed');
    const poll = await rest(s.tb, 'GET', `/api/v1/pins/${pin}`, { headers: { 'x-pin-secret': secret } });
    expect(poll.body).toMatchObject({ status: 'claimed', node: 'sensor-7' });
    expect(poll.body.key).toMatch(/^myk_/);
    expect(await p.content()).not.toContain(poll.body.key as string);
  });

  it('a user disabled while signed in: the broker closes the page (4401), renewal is refused, sign-in shown', async () => {
    const s = await system();
    const { page: p } = await open(s);
    await signIn(p, 'alice');
    await waitText(p, `${card('node-a')} .card-title`, (t) => t === 'Lab A sensor', "lab-a's node");
    const user = await s.store.userByName('alice');
    await s.store.setDisabled(user!.id, true);
    await waitText(p, '#signin-message', (t) => t.includes('session has ended'), 'the session ended');
    expect(await p.isVisible('#login')).toBe(true);
    expect(await p.$(card('node-a'))).toBeNull();
    expect(await p.textContent('#account-who')).toBe('');
  });

  it('a page whose origin the broker does not list cannot sign in (the browser refuses the answer)', async () => {
    const s = await system(900, false);
    const { page: p, context } = await open(s);
    await signIn(p, 'alice');
    await waitText(p, '#signin-message', (t) => t.includes('does not accept this page'), 'the refusal');
    expect(await refreshCookie(context)).toBeUndefined();
    expect(await p.textContent('#role')).toBe('');
  });

  it('a system admin picks the organisation: a PIN claimed and a key created for lab-b', async () => {
    const s = await system();
    const made = await rest(s.tb, 'POST', '/api/v1/pins');
    const { pin, secret } = made.body as { pin: string; secret: string };
    const { page: p } = await open(s);
    await signIn(p, 'root');
    await waitText(p, '#account-who', (t) => t === 'root · all organisations', 'a system-wide session');
    await waitText(p, `${card('node-b')} .card-title`, (t) => t === 'Lab B sensor', 'every organisation');
    await p.click('#account-open');
    await waitFor(
      async () => (await p.$$eval('#pin-org option', (o) => o.map((x) => x.textContent))).includes('lab-b'),
      'the organisations',
      UI_TIMEOUT_MS,
    );
    await p.selectOption('#pin-org', 'lab-b');
    await p.fill('#pin-code', pin);
    await p.fill('#pin-node', 'sensor-b');
    await p.click('#pin-submit');
    await waitText(p, '#pin-result', (t) => t.includes('claimed'), 'claimed');
    const poll = await rest(s.tb, 'GET', `/api/v1/pins/${pin}`, { headers: { 'x-pin-secret': secret } });
    const orgB = (await s.store.orgByName('lab-b'))!.id;
    expect((await s.store.apiKey((poll.body.key as string).slice(4, 20)))?.orgId).toBe(orgB);
    await p.waitForSelector('#key-org:not([hidden])', { timeout: UI_TIMEOUT_MS });
    await waitFor(
      async () => (await p.$$eval('#key-org option', (o) => o.map((x) => x.textContent))).includes('lab-b'),
      'the key form offers the organisations',
      UI_TIMEOUT_MS,
    );
    await p.selectOption('#key-org', 'lab-b');
    await p.click('#key-create-submit');
    await p.waitForSelector('#key-text', { timeout: UI_TIMEOUT_MS });
    const text = await p.inputValue('#key-text');
    expect((await s.store.apiKey(text.slice(4, 20)))?.orgId).toBe(orgB);
    // Closing the dialog wipes the key text too.
    await p.keyboard.press('Escape');
    await p.waitForSelector('#key-text', { state: 'detached', timeout: UI_TIMEOUT_MS });
  });

  it('a viewer gets no Account button', async () => {
    const s = await system();
    const { page: p } = await open(s);
    await signIn(p, 'vera');
    await waitText(p, '#account-who', (t) => t === 'vera · lab-a', 'signed in');
    expect(await p.textContent('#role')).toBe('viewer');
    expect(await p.isHidden('#account-open')).toBe(true);
  });

  it('signs out: the broker revokes the cookie (refresh then 401) and a reload asks again', async () => {
    const s = await system();
    const { page: p, context } = await open(s);
    await signIn(p, 'alice');
    await waitText(p, '#account-who', (t) => t === 'alice · lab-a', 'signed in');
    const cookie = await refreshCookie(context);
    expect(cookie).toBeDefined();
    await p.click('#logout');
    await p.waitForSelector('#login:not([hidden])', { timeout: UI_TIMEOUT_MS });
    await waitFor(async () => (await refreshCookie(context)) === undefined, 'the cookie cleared', UI_TIMEOUT_MS);
    const refresh = await rest(s.tb, 'POST', '/api/v1/refresh', {
      headers: { cookie: `myc_refresh=${cookie?.value}`, 'x-mycelium-refresh': '1' },
    });
    expect(refresh.status).toBe(401);
    expect(await p.textContent('#account-who')).toBe('');
    await p.reload();
    await p.waitForSelector('#login:not([hidden])', { timeout: UI_TIMEOUT_MS });
    expect(await storage(p)).not.toContain('mycelium.account');
  });

  it('the pasted token keeps working beside the sign-in form', async () => {
    const s = await system();
    const { page: p } = await open(s);
    await p.fill('#token-input', await s.tb.keys.token('viewer', 'wall-screen'));
    await p.click('#login-submit');
    await waitText(p, '#role', (t) => t === 'viewer', 'the pasted token accepted');
    await waitText(p, '#account-who', (t) => t === 'wall-screen', 'who');
    await waitText(p, `${card('node-b')} .card-title`, (t) => t === 'Lab B sensor', 'a system-wide token sees lab-b');
  });
});

describe('the page logic without a browser', () => {
  it('renews 60 s before expiry, a quarter of the lifetime for short tokens, never sooner than 1 s', () => {
    expect(renewDelayMs(900)).toBe(840_000);
    expect(renewDelayMs(120)).toBe(90_000);
    expect(renewDelayMs(3)).toBe(2_250);
    expect(renewDelayMs(1)).toBe(1_000);
  });

  it("names a key's state: revoked wins, then expired", () => {
    const key: KeyView = {
      id: 'a',
      role: 'viewer',
      nodeUid: null,
      label: '',
      expiresAt: null,
      lastUsedAt: null,
      revoked: false,
    };
    expect(keyState(key)).toBe('active');
    expect(keyState({ ...key, expiresAt: 1000 }, 2000)).toBe('expired');
    expect(keyState({ ...key, expiresAt: 3000 }, 2000)).toBe('active');
    expect(keyState({ ...key, expiresAt: 1000, revoked: true }, 2000)).toBe('revoked');
  });
});
