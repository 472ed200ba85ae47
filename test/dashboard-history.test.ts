// The dashboard's history view end to end in real headless Chromium: the broker and the history service (SQLite in
// a temporary directory) on one in-process bus, a real WebSocket gateway with a node sending values, and the
// dashboard service serving the built page. Older values and presence events are written into the store directly
// (a node cannot send a value stamped an hour ago); everything the page shows travels the real REST routes.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDashboard } from '../dashboard/server/build.ts';
import { DashboardServer } from '../dashboard/server/server.ts';
import { createBus } from '../services/bus/index.ts';
import { silentLogger } from '../services/common/log.ts';
import type { SqliteHistoryStore } from '../services/history/store-sqlite.ts';
import { launchBrowser, openPage, type PageWatch, screenshot } from './helpers/browser.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { pointsOf, startHistory, valueRow } from './helpers/history.ts';
import type { TestPeer } from './helpers/ws-client.ts';
import { rawNode, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';

const UI_TIMEOUT_MS = 10_000;
const MIN = 60_000;

let browser: Browser;
let distDir: string;
const dir = mkdtempSync(join(tmpdir(), 'myc-dash-history-'));
let cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

beforeAll(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'myc-dash-history-dist-'));
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

let dbSeq = 0;
/** Broker + gateway + dashboard; the history service only when `history` (else the REST routes answer 503). */
async function system(history = true) {
  const bus = createBus();
  await bus.start();
  cleanup(() => bus.stop());
  const tb = await startBroker({}, undefined, bus);
  cleanup(() => tb.stop());
  const store = history ? (await startHistory(bus, join(dir, `ui-${++dbSeq}.db`), cleanup)).store : undefined;
  const gw = await startWsGateway(tb, cleanup);
  const dash = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl: tb.ws, title: 'History test', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  cleanup(() => dash.stop());
  await dash.start();
  const node = async (uid: string): Promise<TestPeer> => rawNode(gw, cleanup, await tb.keys.token('node', uid));
  return { tb, store, dash, node };
}

async function openDashboard(tb: TestBroker, dash: DashboardServer): Promise<{ page: Page; watch: PageWatch }> {
  const { context, page, watch } = await openPage(browser);
  cleanup(() => context.close());
  await page.goto(`${dash.url}/#token=${await tb.keys.token('viewer', 'vera')}`);
  return { page, watch };
}

const card = (uid: string) => `article.card[data-uid="${uid}"]`;
const chart = '.history-chart';

/** Clicks a resource's name on its card and waits for the view to finish loading (ready or unavailable). */
async function openHistory(p: Page, uid: string, endpoint: string, state = 'ready'): Promise<void> {
  const name = `${card(uid)} [data-endpoint="${endpoint}"] button.res-name`;
  await p.waitForSelector(name, { timeout: UI_TIMEOUT_MS });
  await p.click(name);
  await p.waitForSelector(`.history[data-uid="${uid}"][data-endpoint="${endpoint}"][data-state="${state}"]`, {
    timeout: UI_TIMEOUT_MS,
  });
}

/** The chart's data attributes: what the view plotted and the range it shows. */
/**
 * What the chart says it plots, read in one step: attributes read one by one could mix the points of the last
 * answer with the range and state of the next (a CI run saw 32 points "ready" for the 24 h range that way).
 */
async function plotted(p: Page) {
  const d = await p.$eval(chart, (el) => ({ ...(el as HTMLElement).dataset }));
  return {
    points: Number(d.points),
    first: Number(d.first),
    last: Number(d.last),
    from: Number(d.from),
    to: Number(d.to),
    state: d.state ?? null,
  };
}

async function waitPlotted(p: Page, pred: (s: Awaited<ReturnType<typeof plotted>>) => boolean, what: string) {
  return waitFor(
    async () => {
      const s = await plotted(p);
      return pred(s) ? s : undefined;
    },
    what,
    UI_TIMEOUT_MS,
  );
}

/** Seeds `count` temperatures one minute apart, the last `endAgo` ms before now; returns their times. */
async function seed(store: SqliteHistoryStore, uid: string, endAgo: number, count: number): Promise<number[]> {
  const now = Date.now();
  const times = Array.from({ length: count }, (_, i) => now - endAgo - (count - 1 - i) * MIN);
  await store.insert(
    times.map((at, i) => valueRow(uid, 'temperature', at, 20 + i / 10)),
    [],
  );
  return times;
}

/**
 * A node that sent one live value, 30 stored values in the last hour (the newest 5 min ago), 10 more three hours
 * ago, and an offline spell from 40 to 30 minutes ago; the page opened with a viewer token.
 */
async function seededNode(uid: string) {
  const { tb, store, dash, node } = await system();
  const n = await node(uid);
  n.send({ type: 'update', data: { temperature: 22.5 } });
  await waitFor(async () => (await pointsOf(tb, uid, 'temperature')).length === 1, 'the live value stored');
  const hour = await seed(store!, uid, 5 * MIN, 30);
  const older = await seed(store!, uid, 3 * 60 * MIN, 10);
  const now = Date.now();
  await store!.insert(
    [],
    [
      { uid, at: now - 40 * MIN, kind: 'out', detail: { reason: 'timeout' }, key: `${uid}:out` },
      { uid, at: now - 30 * MIN, kind: 'new', detail: {}, key: `${uid}:new` },
    ],
  );
  const { page, watch } = await openDashboard(tb, dash);
  return { tb, n, hour, older, page, watch };
}

// Chromium beside four other engineers' loads on two cores runs these several times slower than on a quiet
// machine (about 6 s each there): a generous bound, not a timing assertion.
describe('dashboard history view', { timeout: 90_000 }, () => {
  it('opens with the last hour of stored values, continues live, and refetches for 24 h', async () => {
    const uid = 'hist-1';
    const { tb, n, hour, older, page: p, watch } = await seededNode(uid);
    const apiUrls: string[] = [];
    p.on('request', (r) => {
      if (r.url().includes('/api/v1/')) apiUrls.push(r.url());
    });
    await openHistory(p, uid, 'temperature');
    const opened = await plotted(p);
    expect(opened.points).toBe(31);
    expect(opened.first).toBe(hour[0]);
    expect(opened.to - opened.from).toBe(60 * MIN);
    expect(await p.getAttribute('.history-range[data-range="1h"]', 'aria-pressed')).toBe('true');
    // Online, then the ten offline minutes, then online again (the node's own `new` when it connected changes
    // nothing: it was online already).
    expect(await p.getAttribute('.presence', 'data-bands')).toBe('online,offline,online');
    expect(await p.locator('.history-chart canvas').count()).toBeGreaterThan(0);
    await screenshot(p, 'dashboard-history');

    // A live value is appended to the open chart.
    n.send({ type: 'update', data: { temperature: 23.5 } });
    const live = await waitPlotted(p, (s) => s.points === 32, 'the live value on the chart');
    expect(live.last).toBeGreaterThan(opened.last);
    await waitFor(async () => (await pointsOf(tb, uid, 'temperature')).length === 42, 'the live value stored');

    // 24 h: a new query, which reaches the older values.
    await p.click('.history-range[data-range="24h"]');
    const day = await waitPlotted(p, (s) => s.state === 'ready' && s.to - s.from === 24 * 60 * MIN, 'the 24 h range');
    expect(day.points).toBe(42);
    expect(day.first).toBe(older[0]);

    // The token travels in a header, never in a URL the page requested.
    expect(apiUrls.length).toBeGreaterThanOrEqual(4);
    for (const url of apiUrls) expect(url).not.toMatch(/token|eyJ/);
    expect(watch.errors).toEqual([]);
    expect(watch.dialogs).toEqual([]);
    await p.keyboard.press('Escape');
    await p.waitForSelector('.history-overlay', { state: 'hidden', timeout: UI_TIMEOUT_MS });
  });

  it('starts a card chart with the last hour from history, then goes on live', async () => {
    const uid = 'hist-card';
    const { n, hour, page: p, watch } = await seededNode(uid);
    const canvas = `${card(uid)} [data-endpoint="temperature"] canvas.chart`;
    // The card appears with the snapshot; until then there is nothing to read (a $eval would throw).
    await p.waitForSelector(canvas, { timeout: UI_TIMEOUT_MS });
    const held = async () => {
      const d = await p.$eval(canvas, (el) => ({ ...(el as HTMLElement).dataset }));
      return { points: Number(d.points ?? 0), first: Number(d.first) };
    };
    // The 30 seeded values and the stored live one, one per 30 s bucket, before the snapshot's value.
    const filled = await waitFor(
      async () => {
        const h = await held();
        return h.points >= 32 ? h : undefined;
      },
      'the card chart backfilled',
      UI_TIMEOUT_MS,
    );
    expect(filled.points).toBe(32);
    // `last` per bucket is stamped at its bucket's start: within 30 s before the oldest seeded value.
    expect(filled.first).toBeLessThanOrEqual(hour[0]);
    expect(filled.first).toBeGreaterThan(hour[0] - 30_000);
    n.send({ type: 'update', data: { temperature: 24.5 } });
    await waitFor(async () => (await held()).points === 33, 'the live value after the history', UI_TIMEOUT_MS);
    expect(watch.errors).toEqual([]);
  });

  it('zooms by button and by drag (each a new query) and downloads the visible range as CSV', async () => {
    const uid = 'hist-4';
    const { hour, older, page: p, watch } = await seededNode(uid);
    await openHistory(p, uid, 'temperature');
    await p.click('.history-range[data-range="24h"]');
    await waitPlotted(p, (s) => s.state === 'ready' && s.to - s.from === 24 * 60 * MIN, 'the 24 h range');

    // Zoom in twice: a narrower custom range around the centre, fetched again.
    await p.click('.history-zoom-in');
    await p.click('.history-zoom-in');
    const zoomedIn = await waitPlotted(
      p,
      (s) => s.state === 'ready' && s.to - s.from === 6 * 60 * MIN,
      'the zoomed range',
    );
    expect(await p.getAttribute('.history-range[data-range="custom"]', 'aria-pressed')).toBe('true');
    // Dragging across the chart zooms to what the drag covered.
    const over = await p.locator('.history-chart .u-over').boundingBox();
    expect(over).not.toBeNull();
    await p.mouse.move(over!.x + over!.width * 0.25, over!.y + over!.height / 2);
    await p.mouse.down();
    await p.mouse.move(over!.x + over!.width * 0.75, over!.y + over!.height / 2, { steps: 5 });
    await p.mouse.up();
    const dragged = await waitPlotted(
      p,
      (s) => s.state === 'ready' && s.to - s.from < (zoomedIn.to - zoomedIn.from) * 0.6,
      'the dragged range',
    );
    expect(dragged.from).toBeGreaterThan(zoomedIn.from);

    // Back to 24 h; the CSV of the visible range has the header and one row per stored value in it.
    await p.click('.history-range[data-range="24h"]');
    const shown = await waitPlotted(p, (s) => s.state === 'ready' && s.to - s.from === 24 * 60 * MIN, '24 h again');
    expect(shown.points).toBe(41);
    const [download] = await Promise.all([p.waitForEvent('download'), p.click('.history-csv')]);
    expect(download.suggestedFilename()).toBe(`${uid}-temperature.csv`);
    const lines = readFileSync((await download.path())!, 'utf8')
      .trimEnd()
      .split('\n');
    expect(lines[0]).toBe('time,value');
    expect(lines).toHaveLength(shown.points + 1);
    expect(lines[1]).toBe(`${new Date(older[0]).toISOString()},20`);
    expect(lines).toContain(`${new Date(hour[29]).toISOString()},22.9`);
    expect(watch.errors).toEqual([]);
  });

  it('shows a text resource as a log of values, device strings as text', async () => {
    const { tb, store, dash, node } = await system();
    const uid = 'hist-2';
    const evil = '<img src=x onerror=alert(1)>';
    const n = await node(uid);
    n.send({ type: 'update', data: { name: evil, text: 'first' } });
    await waitFor(async () => (await pointsOf(tb, uid, 'text')).length === 1, 'the first text stored');
    const now = Date.now();
    await store!.insert(
      [valueRow(uid, 'text', now - 20 * MIN, `<b>bold</b> ${evil}`), valueRow(uid, 'text', now - 10 * MIN, 'hello')],
      [],
    );

    const { page: p, watch } = await openDashboard(tb, dash);
    await openHistory(p, uid, 'text');
    expect(await p.locator('.history-title').textContent()).toBe(`${evil} · text`);
    const log = p.locator('.history-log li .log-value');
    expect(await log.allTextContents()).toEqual(['first', 'hello', `<b>bold</b> ${evil}`]);
    expect(await p.locator('.history-chart').isHidden()).toBe(true);

    // A live value goes on top of the log.
    n.send({ type: 'update', data: { text: 'live one' } });
    await waitFor(async () => (await log.first().textContent()) === 'live one', 'the live text on top', UI_TIMEOUT_MS);
    expect(await p.locator('.history img, .history b').count()).toBe(0);
    expect(watch.dialogs).toEqual([]);
    expect(watch.errors).toEqual([]);
  });

  it('without a history service the view starts empty, says so, and goes on live', async () => {
    const { tb, dash, node } = await system(false);
    const uid = 'hist-3';
    const n = await node(uid);
    n.send({ type: 'update', data: { temperature: 19 } });
    const { page: p, watch } = await openDashboard(tb, dash);
    await openHistory(p, uid, 'temperature', 'unavailable');
    expect(await p.locator('.history-note').textContent()).toMatch(/^No history: no history service is running/);
    expect((await plotted(p)).points).toBe(0);
    n.send({ type: 'update', data: { temperature: 19.5 } });
    await waitPlotted(p, (s) => s.points === 1, 'the live value on the empty chart');
    // The 503 is the page's expected answer, not an error of the page's own (the browser logs failed fetches as
    // console errors: only that line is allowed).
    expect(watch.errors.filter((e) => !/status of 503/.test(e))).toEqual([]);
  });
});

describe('broker CORS for the page', () => {
  it('answers preflights for GET with Authorization only, and lets a page read only what it asked with a token', async () => {
    const tb = await startBroker({ allowAnonymousViewers: true });
    cleanup(() => tb.stop());
    const origin = 'http://dashboard.example:8080';
    const pre = await fetch(`${tb.http}/api/v1/nodes/x/resources/t/history`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe(origin);
    expect(pre.headers.get('access-control-allow-methods')).toBe('GET');
    expect(pre.headers.get('access-control-allow-headers')).toBe('Authorization');

    const token = await tb.keys.token('viewer', 'v');
    const withToken = await fetch(`${tb.http}/api/v1/nodes`, { headers: { origin, authorization: `Bearer ${token}` } });
    expect(withToken.status).toBe(200);
    expect(withToken.headers.get('access-control-allow-origin')).toBe(origin);
    // A bad token: the 401 is readable too, so the page can say why.
    const badToken = await fetch(`${tb.http}/api/v1/nodes`, { headers: { origin, authorization: 'Bearer nope' } });
    expect(badToken.status).toBe(401);
    expect(badToken.headers.get('access-control-allow-origin')).toBe(origin);
    // Anonymous viewers are allowed, but a foreign page may not read through a visitor's browser.
    const anonymous = await fetch(`${tb.http}/api/v1/nodes`, { headers: { origin } });
    expect(anonymous.status).toBe(200);
    expect(anonymous.headers.get('access-control-allow-origin')).toBeNull();
    // Writes are never opened to other origins.
    const put = await fetch(`${tb.http}/api/v1/nodes/x/resources/led`, {
      method: 'PUT',
      headers: { origin, authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '1',
    });
    expect(put.headers.get('access-control-allow-origin')).toBeNull();
  });
});
