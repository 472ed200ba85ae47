// A signed-in page renews its access token on the open WebSocket (the `token` frame) instead of reconnecting at
// the broker's 4401: in real headless Chromium, with 8 s access tokens, the page keeps one WebSocket across
// several renewals and a running console command's output keeps arriving past the first token's expiry (a
// reconnect would have cancelled it: the broker cancels a closed client's requests). Real broker, accounts
// service (SQLite in a temporary directory) and dashboard server; the gateway is a test peer on /gw in lab-a.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDashboard } from '../dashboard/server/build.ts';
import { DashboardServer } from '../dashboard/server/server.ts';
import { addUser, createOrg } from '../services/accounts/admin.ts';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { AccountsService } from '../services/accounts/service.ts';
import { AccountsStore } from '../services/accounts/store.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { silentLogger } from '../services/common/log.ts';
import { mintToken } from '../services/common/tokens.ts';
import { launchBrowser, openPage } from './helpers/browser.ts';
import { startBroker } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';

const UI_TIMEOUT_MS = 15_000;
const PASSWORD = 'a long enough password';
/**
 * The access token's lifetime: the page renews it at three quarters (6 s). Not shorter: exp is in whole seconds, so
 * a token lives up to 1 s less than `expiresIn` says, and a 3 s token may expire before the page's renewal at 2.25 s
 * (the broker then closes with 4401 and the page reconnects, as before this change).
 */
const TTL_S = 8;

let browser: Browser;
let distDir: string;
const dir = mkdtempSync(join(tmpdir(), 'myc-dash-ws-renewal-'));
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'myc-dash-ws-renewal-dist-'));
  await buildDashboard(distDir);
  browser = await launchBrowser();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  rmSync(distDir, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * The accounts service with 8 s access tokens, alice (operator of lab-a), the dashboard, and the broker on the port
 * the dashboard was given, listing the dashboard's origin (as test/dashboard-accounts.test.ts does).
 */
async function system() {
  const keys = makeKeys();
  const bus = new MemoryBus();
  await bus.start();
  cleanups.push(() => bus.stop());
  const db = join(dir, 'accounts.db');
  const store = new AccountsStore(new SqliteDriver(db));
  await store.open();
  cleanups.push(() => store.close());
  const service = new AccountsService(
    { accessTtlSeconds: TTL_S, revocationPollMs: 100 },
    { bus, store: new AccountsStore(new SqliteDriver(db)), privateKey: keys.privateKey, log: silentLogger() },
  );
  await service.start();
  cleanups.push(() => service.stop());
  const orgA = (await createOrg(store, 'lab-a')).id;
  await addUser(store, { name: 'alice', password: PASSWORD, org: 'lab-a', role: 'operator' });
  const placeholder = await startBroker({}, keys, bus);
  const port = placeholder.broker.port;
  const dash = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl: placeholder.ws, title: 'WS renewal test', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  await dash.start();
  cleanups.push(() => dash.stop());
  await placeholder.stop();
  const tb = await startBroker({ port, sessionSweepMs: 100, dashboardOrigin: [dash.url] }, keys, bus);
  cleanups.push(() => tb.stop());
  // A gateway of lab-a, played by a test peer: it announces an agent and answers the exec the broker routes to it.
  const gwToken = await mintToken(keys.privateKey, { sub: 'gw-a', role: 'gateway', org: orgA, ttlSeconds: 600 });
  const gw = await TestPeer.connect(`${tb.ws}/gw`, gwToken);
  cleanups.push(() => gw.close());
  gw.send({
    type: 'new',
    uid: 'agent-1',
    protocol: 'WebSocket',
    data: { name: 'edge box', os: 'Linux', console: { commands: { sleep: { params: {} } } } },
  });
  await waitFor(() => tb.broker.table.get('agent-1'), 'the agent known to the broker');
  return { tb, dash, gw };
}

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

describe('dashboard: token renewal on the open WebSocket', { timeout: 90_000 }, () => {
  it('keeps one WebSocket and a running console command across several renewals of an 8 s token', async () => {
    const { dash, gw } = await system();
    const { page: p, context } = await openPage(browser);
    cleanups.push(() => context.close());
    // Sessions the broker opened for the page (each starts with `hello`); the page's attempts before sign-in
    // (no token: refused at the handshake) are WebSockets too, but never get one.
    let sessions = 0;
    const sent: string[] = [];
    const received: string[] = [];
    p.on('websocket', (ws) => {
      ws.on('framesent', (f) => sent.push(String(f.payload)));
      ws.on('framereceived', (f) => {
        const text = String(f.payload);
        received.push(text);
        if (text.startsWith('{"type":"hello"')) sessions++;
      });
    });
    let signedIn = 0;
    p.on('response', (r) => {
      if (r.url().endsWith('/api/v1/login') && r.status() === 200) signedIn = Date.now();
    });
    await p.goto(dash.url);
    await p.waitForSelector('#signin-user', { timeout: UI_TIMEOUT_MS });
    await p.fill('#signin-user', 'alice');
    await p.fill('#signin-password', PASSWORD);
    await p.click('#signin-submit');
    await waitText(p, '#conn', (t) => t === 'Live', 'live');

    // A console command that runs until the gateway says otherwise.
    await p.locator('article.card[data-uid="agent-1"] button.card-console').click({ timeout: UI_TIMEOUT_MS });
    await p.click('.console-command[data-command="sleep"] .console-run');
    const exec = await gw.next((f) => f.type === 'exec', 'the exec at the gateway', UI_TIMEOUT_MS);
    gw.send({ type: 'exec-output', id: exec.id, seq: 0, stream: 'stdout', data: 'tick 0\n' });
    await waitText(p, '.console-output', (t) => t.includes('tick 0'), 'the first chunk');

    // Three renewals on the open socket, each answered token-ok; output keeps arriving after each.
    const tokenFrames = () => sent.filter((s) => s.includes('"type":"token"')).length;
    const tokenOks = () => received.filter((s) => s.includes('"type":"token-ok"')).length;
    for (let n = 1; n <= 3; n++) {
      await waitFor(() => tokenOks() >= n, `renewal ${n} taken on the open socket`, 2 * TTL_S * 1000);
      gw.send({ type: 'exec-output', id: exec.id, seq: n, stream: 'stdout', data: `tick ${n}\n` });
      await waitText(p, '.console-output', (t) => t.includes(`tick ${n}`), `the chunk after renewal ${n}`);
    }
    // Past the first token's expiry (and the sweeps after it): still the one socket, the command still running.
    expect(signedIn).toBeGreaterThan(0);
    expect(Date.now()).toBeGreaterThan(signedIn + TTL_S * 1000);
    expect(sessions).toBe(1);
    expect(tokenFrames()).toBe(tokenOks());
    expect(received.some((s) => s.includes('"type":"error"'))).toBe(false);
    expect(gw.frames.filter((f) => f.type === 'exec-cancel')).toEqual([]);
    await waitText(p, '.console-status', (t) => t.includes('running'), 'the command still running');
    expect(await p.isHidden('#login')).toBe(true);
    expect(await p.textContent('#conn')).toBe('Live');
  });
});
