// The dashboard's Gateways page in real headless Chromium (issue 11, item 7): broker + a real WebSocket gateway
// reporting every 100 ms + a test node whose values move the counters; a TestPeer plays a compromised gateway
// whose strings must stay text.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDashboard } from '../dashboard/server/build.ts';
import { DashboardServer } from '../dashboard/server/server.ts';
import { silentLogger } from '../services/common/log.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { launchBrowser, openPage, screenshot } from './helpers/browser.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { startWsGateway } from './helpers/ws-gateway.ts';

/** How long the page gets to show something the broker sent. */
const UI_TIMEOUT_MS = 10_000;

let browser: Browser;
let distDir: string;
const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

beforeAll(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'myc-gw-dash-dist-'));
  await buildDashboard(distDir);
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  rmSync(distDir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(): Promise<{ tb: TestBroker; dash: DashboardServer }> {
  const tb = await startBroker({ gatewayReportMinIntervalMs: 0 });
  cleanup(() => tb.stop());
  const dash = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl: tb.ws, title: 'Mycelium test', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  cleanup(() => dash.stop());
  await dash.start();
  return { tb, dash };
}

async function open(url: string): Promise<Page> {
  const p = await openPage(browser);
  cleanup(() => p.context.close());
  await p.page.goto(url);
  return p.page;
}

const gwCard = (id: string) => `article.gw-card[data-gateway="${id}"]`;

async function waitText(p: Page, selector: string, pred: (t: string) => boolean, what: string): Promise<string> {
  const deadline = Date.now() + UI_TIMEOUT_MS;
  for (;;) {
    const el = p.locator(selector).first();
    const t = (await el.count()) > 0 ? ((await el.textContent()) ?? '') : '';
    if (pred(t)) return t;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last text: ${JSON.stringify(t)})`);
    await p.waitForTimeout(25);
  }
}

describe('dashboard: the Gateways page', () => {
  it("lists a real gateway's card with counters that move, a sparkline, and actions that work", async () => {
    const { tb, dash } = await setup();
    const gw = await startWsGateway(tb, cleanup, {
      allowAnonymousNodes: true,
      statusInterval: 0.1,
      gatewayId: 'ws-dash',
    });
    const node = new WsTestNode({
      gatewayUrl: `ws://127.0.0.1:${gw.port}/node?id=kitchen-1`,
      name: 'kitchen',
      temperature: true,
      intervalMs: 120,
      backoffInitialMs: 20,
      backoffMaxMs: 200,
    });
    cleanup(() => node.stop());
    await node.start();
    await node.opened();

    const p = await open(`${dash.url}/#token=${await tb.keys.token('operator', 'alice')}`);
    await waitText(p, '#conn', (t) => t === 'Live', 'the connection to be live');
    expect(await p.locator('#gateways').isHidden()).toBe(true);
    await p.click('#nav-gateways');
    expect(await p.locator('#grid').isHidden()).toBe(true);
    expect(await p.getAttribute('#nav-gateways', 'aria-pressed')).toBe('true');

    const card = gwCard('ws-dash');
    await waitText(p, `${card} .gw-id`, (t) => t === 'ws-dash', 'the gateway card');
    const meta = await waitText(p, `${card} .gw-meta`, (t) => t.includes('WebSocket'), 'the inventory');
    expect(meta).toContain(`ws://127.0.0.1:${gw.port}/node`);
    expect(meta).toContain(tb.broker.id);
    await waitText(p, `${card} [data-counter="nodes"]`, (t) => t === '1 online', 'one node online');
    // The node sends a value every 120 ms and the gateway reports every 100 ms: the count must move.
    const first = Number(await waitText(p, `${card} [data-counter="in"]`, (t) => Number(t) > 0, 'messages in'));
    await waitText(p, `${card} [data-counter="in"]`, (t) => Number(t) > first + 5, 'messages in moving');
    await waitText(p, `${card} .gw-rate`, (t) => /msg\/s$/.test(t), 'a message rate');
    await waitFor(
      async () => ((await p.getAttribute(`${card} .spark-line`, 'points')) ?? '').split(' ').length >= 3,
      'a sparkline of several points',
      UI_TIMEOUT_MS,
    );

    // Actions: rediscover every node (the node gets the discover request again), then set the log level.
    await p.click(`${card} [data-action="rediscover"]`);
    await waitText(p, `${card} .gw-result`, (t) => t.startsWith('ok'), 'rediscover result');
    expect(await p.getAttribute(`${card} .gw-result`, 'data-result')).toBe('ok');
    await p.selectOption(`${card} .gw-level`, 'warn');
    await p.click(`${card} [data-action="set-log-level"]`);
    await waitText(p, `${card} .gw-result`, (t) => t === 'ok', 'set-log-level result');
    // Forget a node the gateway does not hold: the gateway's error is shown.
    await p.fill(`${card} .gw-uid`, 'nobody');
    await p.click(`${card} [data-action="forget"]`);
    await waitText(p, `${card} .gw-result`, (t) => t.startsWith('error') && t.includes('nobody'), 'forget error');
    await screenshot(p, 'gateways-page');

    // The gateway stops: its card goes.
    await gw.stop();
    await waitFor(async () => (await p.locator(card).count()) === 0, 'the card to go', UI_TIMEOUT_MS);
  });

  it('shows a viewer the counters without action buttons', async () => {
    const { tb, dash } = await setup();
    await startWsGateway(tb, cleanup, { statusInterval: 60, gatewayId: 'ws-view' });
    const p = await open(`${dash.url}/#token=${await tb.keys.token('viewer', 'bob')}`);
    await p.click('#nav-gateways');
    await waitText(p, `${gwCard('ws-view')} [data-counter="nodes"]`, (t) => t === '0 online', 'the counters');
    expect(await p.locator(`${gwCard('ws-view')} [data-action]`).count()).toBe(0);
  });

  it("renders a compromised gateway's strings as text: no script runs, no element is created", async () => {
    const { tb, dash } = await setup();
    const gw = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', 'evil-gw'));
    cleanup(() => gw.close());
    gw.send({
      type: 'inventory',
      protocol: '<img src=x onerror=alert(1)>',
      version: '"><script>alert(2)</script>',
      startedAt: 1,
      actions: [],
      listen: ['<svg onload=alert(3)>'],
    });
    gw.send({
      type: 'status',
      at: Date.now(),
      uptimeS: 5,
      nodes: { '<b>online</b>': 2 },
      messages: { in: 1, out: 0 },
      errors: { '<iframe src=javascript:alert(4)>': 3 },
      reconnects: 0,
      eventLoopLagMs: 0,
    });
    const { page: p, watch } = await openPage(browser);
    cleanup(() => p.context().close());
    await p.goto(`${dash.url}/#token=${await tb.keys.token('operator', 'carol')}`);
    await p.click('#nav-gateways');
    const card = gwCard('evil-gw');
    await waitText(p, `${card} .gw-meta`, (t) => t.includes('<img src=x onerror=alert(1)>'), 'the literal protocol');
    expect(await waitText(p, `${card} [data-counter="nodes"]`, (t) => t.length > 0, 'nodes')).toBe('2 <b>online</b>');
    expect(await waitText(p, `${card} .gw-errors`, (t) => t.length > 0, 'errors')).toContain(
      '<iframe src=javascript:alert(4)>',
    );
    // Negative check: no injected handler may open a dialog; 300 ms bounds the wait for a late onload or onerror.
    await settle(300);
    expect(watch.dialogs).toEqual([]);
    const injected = await p.evaluate(() => ({
      handlers: document.querySelectorAll('[onerror], [onload]').length,
      imgs: document.querySelectorAll('main img').length,
      iframes: document.querySelectorAll('iframe').length,
      bold: document.querySelectorAll('main b').length,
    }));
    expect(injected).toEqual({ handlers: 0, imgs: 0, iframes: 0, bold: 0 });
  });
});
