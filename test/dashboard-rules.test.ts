// The dashboard's Rules page and rule editor end to end in real headless Chromium: a broker and a rules service on
// one in-process bus, a real WebSocket gateway with a node whose temperature updates fire the rules, and the
// dashboard service serving the built page. Everything the page shows travels the broker's REST routes.
//
// Cross-origin writes: the page (its own origin) POSTs enable/disable and PUTs sources with a Bearer token; the
// broker lists the dashboard's origin (--dashboard-origin), so the dashboard starts first, told the broker's port.
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDashboard } from '../dashboard/server/build.ts';
import { DashboardServer } from '../dashboard/server/server.ts';
import { completionAt, parseRuleApi } from '../dashboard/src/rules-api-types.ts';
import { createBus } from '../services/bus/index.ts';
import { silentLogger } from '../services/common/log.ts';
import type { RuleRecord } from '../services/rules/protocol.ts';
import { launchBrowser, openPage, type PageWatch, screenshot } from './helpers/browser.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { rulesOptions, startRules, tempDir } from './helpers/rules.ts';
import { rawNode, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';
import { freePort } from './helpers/ports.ts';

/** The page polls every 3 s: a change shows within two polls. */
const UI_TIMEOUT_MS = 15_000;
const HOSTILE = '<img src=x onerror=alert(1)>';

let browser: Browser;
let distDir: string;
let cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

beforeAll(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'myc-dash-rules-dist-'));
  await buildDashboard(distDir);
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  rmSync(distDir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

const COUNT_RULE = `export default {
  name: 'count',
  description: 'counts temperatures',
  on: { update: { node: 'sensor-*', resource: 'temperature' } },
  run() {},
};
`;
// Its error quotes markup, as an error quoting a device's value might.
const FAILS_RULE = `export default {
  name: 'fails',
  on: { update: { node: 'sensor-*', resource: 'temperature' } },
  run(e) { throw new Error('${HOSTILE} bad value ' + e.value); },
};
`;

/** Broker + rules service (count, fails; none when `withRules` is false) + WebSocket gateway, one node + dashboard. */
async function system(withRules = true) {
  const bus = createBus();
  await bus.start();
  cleanup(() => bus.stop());
  // The page must know the broker's URL and the broker the page's origin: the port is chosen first.
  const port = await freePort();
  const dash = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl: `ws://127.0.0.1:${port}`, title: 'Rules test', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  cleanup(() => dash.stop());
  await dash.start();
  const tb = await startBroker({ port, dashboardOrigin: [dash.url] }, undefined, bus);
  cleanup(() => tb.stop());
  const dir = tempDir(cleanup, 'dash-rules-');
  writeFileSync(join(dir, 'count.js'), COUNT_RULE);
  writeFileSync(join(dir, 'fails.js'), FAILS_RULE);
  // Failures never disable `fails` here; a save's trial load must end well within the broker's timeout.
  const rules = withRules
    ? await startRules(bus, cleanup, dir, {
        maxFailures: 1000,
        limits: { ...rulesOptions('', '').limits, loadTimeoutMs: 2000 },
      })
    : undefined;
  const gw = await startWsGateway(tb, cleanup);
  const node = await rawNode(gw, cleanup, await tb.keys.token('node', 'sensor-1'));
  let value = 20;
  const update = () => node.send({ type: 'update', data: { temperature: value++ } });
  const record = (name: string): RuleRecord => {
    const r = rules?.records().find((x) => x.name === name);
    if (r === undefined) throw new Error(`no rule ${name}`);
    return r;
  };
  return { tb, dir, dash, update, record };
}

/** Opens the page with a token of `role` and shows the Rules page. */
async function openRules(
  tb: TestBroker,
  dash: DashboardServer,
  role: 'viewer' | 'admin',
  state = 'ready',
): Promise<{ page: Page; watch: PageWatch; writes: string[]; chunks: string[] }> {
  const { context, page, watch } = await openPage(browser);
  cleanup(() => context.close());
  const writes: string[] = [];
  // The Rules page's and the editor's chunks: none is fetched before it is needed.
  const chunks: string[] = [];
  page.on('request', (req) => {
    const m = /\/assets\/(rules-[a-z]+)-/.exec(req.url());
    if (m !== null) chunks.push(m[1]);
  });
  page.on('request', (req) => {
    if (req.url().startsWith(`${tb.http}/api/v1/rules/`) && (req.method() === 'POST' || req.method() === 'PUT'))
      writes.push(`${req.method()} ${new URL(req.url()).pathname}`);
  });
  await page.goto(`${dash.url}/#token=${await tb.keys.token(role, `${role}-1`)}`);
  await page.waitForSelector('#conn[data-state="open"]', { timeout: UI_TIMEOUT_MS });
  expect(chunks).toEqual([]);
  await page.click('#nav-rules');
  await page.waitForSelector(`#rules[data-state="${state}"]`, { timeout: UI_TIMEOUT_MS });
  expect(chunks).not.toContain('rules-editor');
  return { page, watch, writes, chunks };
}

const rule = (name: string) => `article.rule[data-rule="${name}"]`;

async function runsShown(page: Page, name: string): Promise<number> {
  return Number(await page.getAttribute(rule(name), 'data-runs'));
}

/** Replaces the editor's whole text as typed input (CodeMirror lives in the dialog's shadow root). */
async function typeSource(page: Page, source: string): Promise<void> {
  await page.click('.rule-editor .cm-content');
  await page.keyboard.press('Control+A');
  // Backspace is CodeMirror's own command. Typed over a selection of several lines, text is first applied by
  // Chromium's contenteditable editing, which merges the lines with inline styles that the page's CSP blocks
  // (reported, harmless: CodeMirror redraws from its state); the CSP check below would count those.
  await page.keyboard.press('Backspace');
  await page.keyboard.insertText(source);
}

describe('rules API completions (no browser)', () => {
  it('reads the members of the real rule API', () => {
    const api = parseRuleApi(readFileSync(join(import.meta.dirname, '../services/rules/rule.ts'), 'utf8'));
    const ctx = completionAt('    await ctx.wr', api);
    expect(ctx?.back).toBe(2);
    const write = ctx?.members.find((m) => m.name === 'write');
    expect(write).toMatchObject({
      method: true,
      detail: 'write(uid: string, resource: string, payload: RuleJson): Promise<WriteOutcome>',
      doc: expect.stringContaining('Writes to a node'),
    });
    expect(completionAt('ctx.state.', api)?.members.map((m) => m.name)).toEqual(['get', 'set', 'delete', 'keys']);
    expect(completionAt('ctx.log.w', api)?.members.map((m) => m.name)).toEqual(['info', 'warn', 'error']);
    const event = completionAt('if (event.', api)?.members.map((m) => m.name);
    expect(event).toEqual(expect.arrayContaining(['type', 'uid', 'resource', 'value', 'reason', 'result', 'at']));
    const keys = completionAt('  on: { sch', api);
    expect(keys?.keys).toBe(true);
    expect(keys?.members.map((m) => m.name)).toEqual(expect.arrayContaining(['name', 'on', 'run', 'schedule']));
    expect(completionAt('ctx.nope.', api)).toBeUndefined();
  });
});

describe('dashboard Rules page', () => {
  it('lists the rules with runs that grow, shows an error as text, and gives a viewer no controls', async () => {
    const { tb, dash, update } = await system();
    const { page, watch } = await openRules(tb, dash, 'viewer');
    await page.waitForSelector(rule('count'), { timeout: UI_TIMEOUT_MS });
    expect(await page.textContent(`${rule('count')} .rule-status`)).toBe('running');
    expect(await page.textContent(`${rule('count')} .rule-description`)).toBe('counts temperatures');
    expect(await page.textContent(`${rule('count')} .rule-triggers`)).toBe('update node=sensor-* resource=temperature');

    update();
    await waitFor(async () => (await runsShown(page, 'count')) >= 1, 'one run shown', UI_TIMEOUT_MS);
    const first = await runsShown(page, 'count');
    update();
    await waitFor(async () => (await runsShown(page, 'count')) > first, 'the run count to grow', UI_TIMEOUT_MS);
    expect(await page.textContent(`${rule('count')} [data-stat="last-run"]`)).toMatch(/ · ok · .* · sensor-1$/);
    expect(await page.textContent(`${rule('count')} [data-stat="p99"]`)).toMatch(/ ms$/);

    // The failing rule's error is shown as the text it is: no element made of it, no script run.
    const lastError = await waitFor(
      async () => {
        const text = await page.textContent(`${rule('fails')} .rule-last-error`);
        return text?.includes(HOSTILE) ? text : undefined;
      },
      'the error shown',
      UI_TIMEOUT_MS,
    );
    expect(lastError).toContain(`error: Error: ${HOSTILE} bad value`);
    await page.click(`${rule('fails')} .rule-runs summary`);
    expect(await page.textContent(`${rule('fails')} .rule-run-error`)).toContain(HOSTILE);
    expect(await page.$$('#rules img')).toHaveLength(0);
    expect(watch.dialogs).toEqual([]);

    // A viewer sees no Enable/Disable, Edit or New rule.
    expect(await page.$$('.rule-toggle, .rule-edit')).toHaveLength(0);
    expect(await page.isHidden('#rule-new')).toBe(true);
    await screenshot(page, 'dashboard-rules-viewer');
  });

  it('says so when no rules service runs', async () => {
    const { tb, dash } = await system(false);
    const { page } = await openRules(tb, dash, 'admin', 'unavailable');
    expect(await page.textContent('.rules-note')).toBe('No rules service is running.');
    expect(await page.$$('article.rule')).toHaveLength(0);
  });

  it('lets an admin disable a rule (it stops running) and enable it again', async () => {
    const { tb, dash, update, record } = await system();
    const { page, writes } = await openRules(tb, dash, 'admin');
    update();
    await waitFor(async () => (await runsShown(page, 'count')) >= 1, 'a run shown', UI_TIMEOUT_MS);

    await page.click(`${rule('count')} .rule-toggle`);
    await page.waitForSelector(`${rule('count')}[data-status="disabled"]`, { timeout: UI_TIMEOUT_MS });
    expect(await page.textContent(`${rule('count')} .rule-reason`)).toBe('disabled by admin-1');
    expect(await page.textContent(`${rule('count')} .rule-toggle`)).toBe('Enable');
    expect(writes).toEqual(['POST /api/v1/rules/count/disable']);

    // It stops running: the next updates run `fails` but not `count`.
    const countRuns = record('count').runs;
    const failsRuns = record('fails').runs;
    update();
    update();
    await waitFor(() => record('fails').runs >= failsRuns + 2, 'fails to run twice more');
    expect(record('count').runs).toBe(countRuns);
    await waitFor(async () => (await runsShown(page, 'fails')) >= failsRuns + 2, 'the page to show it', UI_TIMEOUT_MS);
    expect(await runsShown(page, 'count')).toBe(countRuns);

    await page.click(`${rule('count')} .rule-toggle`);
    await page.waitForSelector(`${rule('count')}[data-status="running"]`, { timeout: UI_TIMEOUT_MS });
    update();
    await waitFor(() => record('count').runs > countRuns, 'count to run again');
  });

  it('lets an admin edit a rule, shows a compile error and keeps the text, and create a new rule', async () => {
    const { tb, dir, dash, update, record } = await system();
    const { page, watch, writes, chunks } = await openRules(tb, dash, 'admin');
    await page.waitForSelector(rule('count'), { timeout: UI_TIMEOUT_MS });

    await page.click(`${rule('count')} .rule-edit`);
    await waitFor(() => chunks.includes('rules-editor'), 'the editor chunk fetched on the first Edit');
    await page.waitForSelector('.rule-editor[data-rule="count"][data-state="ready"]', { timeout: UI_TIMEOUT_MS });
    expect(await page.textContent('.rule-editor .cm-content')).toContain("name: 'count'");

    // Completions come from the rule API: `ctx.wr` offers write with its signature.
    await typeSource(
      page,
      "export default {\n  name: 'count',\n  on: { new: { node: '*' } },\n  async run(e, ctx) {\n    ctx.wr",
    );
    await page.waitForSelector('.cm-tooltip-autocomplete', { timeout: UI_TIMEOUT_MS });
    expect(await page.textContent('.cm-tooltip-autocomplete')).toContain('write');
    await page.keyboard.press('Escape');

    // A broken source: refused with the compiler's message, nothing saved, the editor keeps what was typed.
    const broken = "export default { name: 'count', on: { new: { node: 'sensor-*' } }, run() { if ( } };";
    await typeSource(page, broken);
    await page.click('#rule-save');
    await page.waitForSelector('.rule-editor[data-state="error"]', { timeout: UI_TIMEOUT_MS });
    const message = await page.textContent('#rule-editor-error');
    expect(message).toMatch(/^MYC_ERR_BAD_RULE: .*does not compile/s);
    expect(await page.textContent('.rule-editor .cm-content')).toBe(broken);
    expect(readFileSync(join(dir, 'count.js'), 'utf8')).toBe(COUNT_RULE);
    await screenshot(page, 'dashboard-rules-editor-error');

    // A good one: saved to the folder, applied, the dialog closes and the page shows the new description.
    const edited = COUNT_RULE.replace('counts temperatures', 'edited in the page');
    await typeSource(page, edited);
    await page.click('#rule-save');
    await page.waitForSelector('.rule-editor-overlay', { state: 'hidden', timeout: UI_TIMEOUT_MS });
    expect(readFileSync(join(dir, 'count.js'), 'utf8')).toBe(edited);
    await waitFor(
      async () => (await page.textContent(`${rule('count')} .rule-description`)) === 'edited in the page',
      'the edited description shown',
      UI_TIMEOUT_MS,
    );
    update();
    await waitFor(() => record('count').runs >= 1, 'the edited rule to run');

    // New rule: the name field names the file and the template's declaration.
    await page.click('#rule-new');
    await page.waitForSelector('.rule-editor[data-rule=""][data-state="ready"]', { timeout: UI_TIMEOUT_MS });
    await page.fill('#rule-name', 'made-here');
    expect(await page.textContent('.rule-editor .cm-content')).toContain("name: 'made-here'");
    await page.click('#rule-save');
    await page.waitForSelector(rule('made-here'), { timeout: UI_TIMEOUT_MS });
    expect(readFileSync(join(dir, 'made-here.ts'), 'utf8')).toContain("name: 'made-here'");
    expect(writes).toEqual([
      'PUT /api/v1/rules/count/source',
      'PUT /api/v1/rules/count/source',
      'PUT /api/v1/rules/made-here/source',
    ]);
    expect(watch.dialogs).toEqual([]);
    // CodeMirror's styles went into a constructed stylesheet in the editor's shadow root: no CSP refusal.
    expect(watch.errors.filter((e) => /Content Security Policy/i.test(e))).toEqual([]);
  });
});
