// The console panel in real headless Chromium (issue 12). Two set-ups:
// - a gateway played by a TestPeer on the broker's /gw: it announces an agent with a `console` resource and
//   answers the `exec` frames the real broker routes to it with scripted output, so the page's side is tested
//   exactly (hostile output, streaming, cancel, refusals, the history);
// - the whole system: broker, WebSocket gateway and a real `mycelium agent` process with a commands file and
//   --allow-pty: output streaming in, `<script>` output as text, cancel, and typing into the terminal (xterm.js).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDashboard } from '../dashboard/server/build.ts';
import { DashboardServer } from '../dashboard/server/server.ts';
import type { WsGatewayOptions } from '../gateways/ws/gateway.ts';
import { silentLogger } from '../services/common/log.ts';
import { ptyAvailable } from '../services/agent/pty.ts';
import { startAgent, writeCommandsFile } from './helpers/agent.ts';
import { launchBrowser, openPage, type PageWatch, screenshot } from './helpers/browser.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { nodeUrl, startWsGateway } from './helpers/ws-gateway.ts';

/** How long a page gets to show something the broker sent (the machine is shared and slow at times). */
const UI_TIMEOUT_MS = 15_000;

let browser: Browser;
let distDir: string;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'myc-console-dist-'));
  await buildDashboard(distDir);
  browser = await launchBrowser();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  rmSync(distDir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function broker(): Promise<TestBroker> {
  const tb = await startBroker();
  cleanups.push(() => tb.stop());
  return tb;
}

async function dashboard(tb: TestBroker): Promise<DashboardServer> {
  const d = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl: tb.ws, title: 'Mycelium console test', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  cleanups.push(() => d.stop());
  await d.start();
  return d;
}

async function fakeGateway(tb: TestBroker, id = 'fake-gw'): Promise<TestPeer> {
  const gw = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', id));
  cleanups.push(() => gw.close());
  return gw;
}

async function page(): Promise<{ page: Page; watch: PageWatch }> {
  const p = await openPage(browser);
  cleanups.push(() => p.context.close());
  return p;
}

const card = (uid: string) => `article.card[data-uid="${uid}"]`;

async function text(p: Page, selector: string): Promise<string> {
  return (await p.locator(selector).first().textContent({ timeout: UI_TIMEOUT_MS })) ?? '';
}

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

const CAPABILITY = {
  commands: {
    ping: { params: { host: '^[a-z0-9.-]+$' }, description: 'ping a host three times' },
    logs: { params: {} },
    sleep: { params: {} },
  },
  shell: true,
  pty: true,
};

/** An agent as the gateway announces it: a name and the console capability (a JSON value, as the agent sends it). */
function announce(gw: TestPeer, uid: string, name: string, capability: Frame = CAPABILITY): void {
  gw.send({
    type: 'new',
    uid,
    protocol: 'WebSocket',
    data: { name, os: 'Linux', console: capability },
  });
}

async function openConsole(p: Page, uid: string): Promise<void> {
  await p.locator(`${card(uid)} button.card-console`).click({ timeout: UI_TIMEOUT_MS });
  await p.locator('.console-overlay:not([hidden])').waitFor({ timeout: UI_TIMEOUT_MS });
}

const isExec = (f: Frame) => f.type === 'exec';

describe('console panel, page side (gateway played by a test peer)', () => {
  it('offers the Console button by role, lists the commands, and checks parameters before sending', async () => {
    const tb = await broker();
    const dash = await dashboard(tb);
    const gw = await fakeGateway(tb);
    announce(gw, 'agent-1', 'edge box');
    gw.send({ type: 'new', uid: 'plain-1', protocol: 'WebSocket', data: { name: 'sensor' } });

    // A viewer gets no console at all, and the capability is never shown as a resource row.
    const viewer = await page();
    await viewer.page.goto(`${dash.url}/#token=${await tb.keys.token('viewer', 'vic')}`);
    await waitText(viewer.page, `${card('agent-1')} .card-title`, (t) => t === 'edge box', 'the agent card');
    expect(await viewer.page.locator('button.card-console').count()).toBe(0);
    expect(await viewer.page.locator(`${card('agent-1')} [data-endpoint="console"]`).count()).toBe(0);

    // An operator: the button on the agent only; the panel lists the commands, no shell line, no terminal.
    const { page: p, watch } = await page();
    await p.goto(`${dash.url}/#token=${await tb.keys.token('operator', 'olga')}`);
    await waitText(p, `${card('plain-1')} .card-title`, (t) => t === 'sensor', 'the plain card');
    expect(await p.locator(`${card('plain-1')} button.card-console:visible`).count()).toBe(0);
    await openConsole(p, 'agent-1');
    await waitText(p, '.console-title', (t) => t === 'Console · edge box', 'the panel title');
    const names = await p.locator('.console-command .console-run').allTextContents();
    expect(names).toEqual(['logs', 'ping', 'sleep']);
    expect(await p.getAttribute('.console-command[data-command="ping"]', 'title')).toBe('ping a host three times');
    expect(await p.locator('.console-shell:visible').count()).toBe(0);
    expect(await p.locator('.console-terminal-open:visible').count()).toBe(0);

    // A parameter that fails the advertised pattern is refused in the page: nothing reaches the gateway.
    const ping = '.console-command[data-command="ping"]';
    await p.fill(`${ping} input[name="host"]`, 'example.org; reboot');
    await p.click(`${ping} .console-run`);
    await waitText(p, `${ping} .console-param-error`, (t) => t === 'must match ^[a-z0-9.-]+$', 'the param error');
    expect(await p.getAttribute(`${ping} input[name="host"]`, 'aria-invalid')).toBe('true');
    await waitText(p, '.console-status', (t) => t.includes('host not valid'), 'the status line');
    await settle(300);
    expect(gw.frames.filter(isExec)).toEqual([]);

    // Escape closes the panel; an admin gets the shell line and the terminal button too.
    await p.keyboard.press('Escape');
    await p.locator('.console-overlay').waitFor({ state: 'hidden', timeout: UI_TIMEOUT_MS });
    const admin = await page();
    await admin.page.goto(`${dash.url}/#token=${await tb.keys.token('admin', 'ada')}`);
    await openConsole(admin.page, 'agent-1');
    await admin.page.locator('.console-shell-input').waitFor({ timeout: UI_TIMEOUT_MS });
    await admin.page.locator('.console-terminal-open').waitFor({ timeout: UI_TIMEOUT_MS });
    expect(watch.errors).toEqual([]);
    expect(watch.dialogs).toEqual([]);
  });

  it('streams output as text (a <script> stays text, ANSI colours become classes), cancels, keeps a history', async () => {
    const tb = await broker();
    const dash = await dashboard(tb);
    const gw = await fakeGateway(tb);
    announce(gw, 'agent-2', 'router');
    const { page: p, watch } = await page();
    await p.goto(`${dash.url}/#token=${await tb.keys.token('operator', 'otto')}`);
    await openConsole(p, 'agent-2');

    // The command and its checked parameter reach the gateway with the requester the broker vouches for.
    const ping = '.console-command[data-command="ping"]';
    await p.fill(`${ping} input[name="host"]`, 'example.org');
    await p.click(`${ping} .console-run`);
    const exec = await gw.next(isExec, 'the exec frame at the gateway', UI_TIMEOUT_MS);
    expect(exec).toMatchObject({ uid: 'agent-2', command: 'ping', params: { host: 'example.org' }, mode: 'output' });
    expect(exec.requester).toEqual({ sub: 'otto', role: 'operator' });
    await waitText(p, '.console-status', (t) => t.includes('running'), 'the running status');

    // Output streams in, chunk by chunk, as text; the hostile chunk creates no element and runs nothing.
    const out = (seq: number, data: string, stream = 'stdout') =>
      gw.send({ type: 'exec-output', id: exec.id, seq, stream, data });
    out(0, 'PING example.org\n');
    await waitText(p, '.console-output', (t) => t.includes('PING example.org'), 'the first chunk');
    out(1, '\u001b[31m<script>alert(1)</script>\u001b[0m <img src=x onerror=alert(2)>\n');
    out(2, 'warning: slow\n', 'stderr');
    await waitText(p, '.console-output', (t) => t.includes('<script>alert(1)</script>'), 'the script as text');
    expect(await p.locator('.console-output script, .console-output img').count()).toBe(0);
    expect(await p.locator('.console-output .ansi-fg-1').textContent()).toBe('<script>alert(1)</script>');
    expect(await p.locator('.console-output .console-stderr').textContent()).toBe('warning: slow\n');
    gw.send({
      type: 'exec-exit',
      id: exec.id,
      status: 'ok',
      code: 0,
      signal: null,
      truncated: false,
      durationMs: 42,
      bytes: 80,
    });
    await waitText(p, '.console-status', (t) => t === 'ping host=example.org: ok · exit 0 · 42 ms', 'the exit');
    expect(await p.locator('.console-cancel').isDisabled()).toBe(true);

    // A long command: cancel sends exec-cancel for it; the gateway's `cancelled` ends it.
    await p.click('.console-command[data-command="sleep"] .console-run');
    const exec2 = await gw.next((f) => isExec(f) && f.command === 'sleep', 'the second exec', UI_TIMEOUT_MS);
    await p.locator('.console-cancel:not([disabled])').waitFor({ timeout: UI_TIMEOUT_MS });
    await p.click('.console-cancel');
    const cancel = await gw.next((f) => f.type === 'exec-cancel', 'the cancel at the gateway', UI_TIMEOUT_MS);
    expect(cancel.id).toBe(exec2.id);
    gw.send({
      type: 'exec-exit',
      id: exec2.id,
      status: 'cancelled',
      code: null,
      signal: 'SIGTERM',
      truncated: false,
      durationMs: 900,
      bytes: 0,
    });
    await waitText(p, '.console-status', (t) => t.startsWith('sleep: cancelled · SIGTERM'), 'the cancelled status');

    // The session's history: newest first; clicking an entry shows its output again.
    const entries = await p.locator('.console-history .console-entry').allTextContents();
    expect(entries.length).toBe(2);
    expect(entries[0]).toContain('sleep');
    expect(entries[0]).toContain('cancelled');
    expect(entries[1]).toContain('ping host=example.org');
    await p.locator('.console-history .console-entry').nth(1).click();
    await waitText(p, '.console-output', (t) => t.includes('<script>alert(1)</script>'), 'the first output again');
    await screenshot(p, 'dashboard-console');
    // Closed and reopened, the panel still has the session's history.
    await p.click('.console-close');
    await openConsole(p, 'agent-2');
    expect(await p.locator('.console-history .console-entry').count()).toBe(2);

    await settle(300);
    expect(watch.dialogs).toEqual([]);
    expect(watch.errors).toEqual([]);
  });

  it('shows refusals and the shell line for admins', async () => {
    const tb = await broker();
    const dash = await dashboard(tb);
    const gw = await fakeGateway(tb);
    announce(gw, 'agent-3', 'gate');
    const { page: p } = await page();
    await p.goto(`${dash.url}/#token=${await tb.keys.token('admin', 'root-user')}`);
    await openConsole(p, 'agent-3');
    await p.fill('.console-shell-input', 'ls -l | wc -l');
    await p.press('.console-shell-input', 'Enter');
    const exec = await gw.next(isExec, 'the shell exec', UI_TIMEOUT_MS);
    expect(exec).toMatchObject({ uid: 'agent-3', shell: 'ls -l | wc -l' });
    expect(exec.requester).toEqual({ sub: 'root-user', role: 'admin' });
    gw.send({
      type: 'exec-exit',
      id: exec.id,
      status: 'refused',
      code: null,
      signal: null,
      truncated: false,
      durationMs: 0,
      bytes: 0,
      reason: 'shell commands are off on this agent',
    });
    await waitText(
      p,
      '.console-status',
      (t) => t === '$ ls -l | wc -l: refused · 0 ms: shell commands are off on this agent',
      'the refusal',
    );
    expect(await p.getAttribute('.console-status', 'data-state')).toBe('refused');
  });
});

describe('console panel limits', () => {
  it('keeps at most 512 K characters of one output on screen and says how much more there was', async () => {
    const tb = await broker();
    const dash = await dashboard(tb);
    const gw = await fakeGateway(tb);
    announce(gw, 'agent-4', 'chatty');
    const { page: p } = await page();
    await p.goto(`${dash.url}/#token=${await tb.keys.token('operator', 'oz')}`);
    await openConsole(p, 'agent-4');
    await p.click('.console-command[data-command="logs"] .console-run');
    const exec = await gw.next(isExec, 'the exec', UI_TIMEOUT_MS);
    // Nine chunks of 60,000 characters: 540,000, of which 524,288 are shown.
    const chunk = `</pre><b>x</b>\n${'0123456789'.repeat(6_000)}`.slice(0, 60_000);
    for (let seq = 0; seq < 9; seq++) gw.send({ type: 'exec-output', id: exec.id, seq, stream: 'stdout', data: chunk });
    gw.send({
      type: 'exec-exit',
      id: exec.id,
      status: 'ok',
      code: 0,
      signal: null,
      truncated: true,
      durationMs: 5,
      bytes: 540_000,
    });
    await waitText(p, '.console-status', (t) => t === 'logs: ok · exit 0 · 5 ms · output truncated', 'the exit');
    const dropped = await text(p, '.console-output .console-dropped');
    expect(dropped).toBe(`\n… ${540_000 - 512 * 1024} more characters not shown`);
    const shown = await p.evaluate(() =>
      [...document.querySelectorAll('.console-output > span:not(.console-dropped):not(.console-note)')]
        .map((e) => e.textContent?.length ?? 0)
        .reduce((a, b) => a + b, 0),
    );
    expect(shown).toBe(512 * 1024);
    // The exit note still shows, before the dropped-count line.
    expect(await p.locator('.console-output .console-note').textContent()).toContain('output truncated');
  });
});

describe('console panel with the whole system (broker, WebSocket gateway, a real agent process)', () => {
  /** A broker, a gateway and `mycelium agent` with the shared test commands plus a few of this file's. */
  async function system(uid: string, agentArgs: string[] = [], gateway: Partial<WsGatewayOptions> = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'myc-console-agent-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const tb = await broker();
    const dash = await dashboard(tb);
    const gw = await startWsGateway(tb, (fn) => cleanups.push(fn), gateway);
    const commands = writeCommandsFile(
      dir,
      // Single-quoted YAML keeps the backslashes for printf, which turns them into ESC and newline.
      `html: {argv: [printf, '\\033[32m<script>alert(1)</script>\\033[0m <b>bold</b>\\n']}
colours: {argv: [printf, '\\033[38;5;200mpalette\\033[0m \\033[38;2;10;200;30;48;2;1;2;3mtrue\\033[0m\\n']}
count: {argv: [sh, -c, "for i in 1 2 3 4 5; do echo line$i; sleep 0.6; done"]}
`,
    );
    const agent = startAgent([
      '--gateway-url',
      nodeUrl(gw),
      '--token',
      await tb.keys.token('node', uid),
      '--commands',
      commands,
      ...agentArgs,
    ]);
    cleanups.push(() => agent.stop());
    await waitFor(
      () => tb.broker.table.get(uid)?.resources.console !== undefined,
      'the agent to announce its console',
      30_000,
    );
    /** Stops the agent and starts another with the same uid and this commands file (a device's new config). */
    const restart = async (commandsText: string, args: string[] = []) => {
      await agent.stop();
      const file = join(dir, 'commands-2.yaml');
      writeFileSync(file, commandsText);
      const next = startAgent([
        '--gateway-url',
        nodeUrl(gw),
        '--token',
        await tb.keys.token('node', uid),
        '--commands',
        file,
        ...args,
      ]);
      cleanups.push(() => next.stop());
      return next;
    };
    return { tb, dash, agent, restart };
  }

  it('runs the commands the agent allows: output streams in as text, and cancel stops a command', async () => {
    const { tb, dash } = await system('agent-real');
    const { page: p, watch } = await page();
    await p.goto(`${dash.url}/#token=${await tb.keys.token('operator', 'opal')}`);
    await openConsole(p, 'agent-real');
    const names = await p.locator('.console-command .console-run').allTextContents();
    expect(names).toEqual(expect.arrayContaining(['count', 'echo', 'html', 'sleep', 'uptime']));

    // A parameter typed by the user, carrying markup, goes through the agent's echo and comes back as text.
    const echo = '.console-command[data-command="echo"]';
    await p.fill(`${echo} input[name="text"]`, '<script>alert(1)</script>');
    await p.click(`${echo} .console-run`);
    await waitText(p, '.console-status', (t) => t.startsWith('echo text=<script>alert(1)</script>: ok'), 'echo ok');
    expect(await p.locator('.console-output').textContent()).toContain('<script>alert(1)</script>\n');

    // Output with ANSI colours: the colour becomes a class, the markup stays text.
    await p.click('.console-command[data-command="html"] .console-run');
    await waitText(p, '.console-status', (t) => t.startsWith('html: ok · exit 0'), 'html ok');
    expect(await p.locator('.console-output .ansi-fg-2').textContent()).toBe('<script>alert(1)</script>');
    expect(await p.locator('.console-output').textContent()).toContain(' <b>bold</b>');
    expect(await p.locator('.console-output script, .console-output b').count()).toBe(0);

    // 256-colour and true-colour codes: colours outside the 16 classes, set through CSSOM (the CSP forbids style
    // attributes; an attribute would show as a CSP error in watch.errors), the text still text.
    await p.click('.console-command[data-command="colours"] .console-run');
    await waitText(p, '.console-status', (t) => t.startsWith('colours: ok · exit 0'), 'colours ok');
    const colours = await p.evaluate(() =>
      [...document.querySelectorAll<HTMLElement>('.console-output span')]
        .filter((s) => s.textContent === 'palette' || s.textContent === 'true')
        .map((s) => ({
          text: s.textContent,
          color: getComputedStyle(s).color,
          background: getComputedStyle(s).backgroundColor,
          attribute: s.getAttribute('style'),
        })),
    );
    expect(colours).toEqual([
      // xterm's palette entry 200 is #ff00d7.
      { text: 'palette', color: 'rgb(255, 0, 215)', background: 'rgba(0, 0, 0, 0)', attribute: expect.any(String) },
      { text: 'true', color: 'rgb(10, 200, 30)', background: 'rgb(1, 2, 3)', attribute: expect.any(String) },
    ]);

    // A command that prints a line every 0.6 s: the first lines show while it still runs.
    await p.click('.console-command[data-command="count"] .console-run');
    const partial = await waitText(p, '.console-output', (t) => t.includes('line2'), 'the first lines');
    expect(partial).not.toContain('line5');
    expect(await text(p, '.console-status')).toContain('running');
    await waitText(p, '.console-status', (t) => t.startsWith('count: ok · exit 0'), 'count ok');
    expect(await p.locator('.console-output').textContent()).toContain('line5');

    // A long command cancelled from the panel.
    const sleep = '.console-command[data-command="sleep"]';
    await p.fill(`${sleep} input[name="s"]`, '1000');
    await p.click(`${sleep} .console-run`);
    await p.locator('.console-cancel:not([disabled])').waitFor({ timeout: UI_TIMEOUT_MS });
    await waitFor(async () => (await text(p, '.console-status')).includes('running'), 'sleep running');
    await p.click('.console-cancel');
    await waitText(p, '.console-status', (t) => t.startsWith('sleep s=1000: cancelled'), 'the cancelled sleep');
    expect(await p.locator('.console-history .console-entry').count()).toBe(5);
    await screenshot(p, 'dashboard-console-agent');
    await settle(300);
    expect(watch.dialogs).toEqual([]);
    expect(watch.errors).toEqual([]);
  }, 120_000);

  it("follows the agent's command list: restarted with another commands file, the open panel's buttons change", async () => {
    const { tb, dash, restart } = await system('agent-swap');
    const { page: p, watch } = await page();
    await p.goto(`${dash.url}/#token=${await tb.keys.token('admin', 'ariel')}`);
    await openConsole(p, 'agent-swap');
    const buttons = () => p.locator('.console-command .console-run').allTextContents();
    expect(await buttons()).toEqual(expect.arrayContaining(['echo', 'uptime']));
    expect(await p.locator('.console-shell:visible').count()).toBe(0);
    await p.click('.console-command[data-command="uptime"] .console-run');
    await waitText(p, '.console-status', (t) => t.startsWith('uptime: ok'), 'uptime ok');

    // The device's operator swaps the commands file and restarts the agent with --allow-shell: the panel, still
    // open, follows without a reload; the session's history stays.
    await restart('df: {argv: [df, -h, /]}\nwho: {argv: [who]}\n', ['--allow-shell']);
    const deadline = Date.now() + UI_TIMEOUT_MS;
    while ((await buttons()).join(',') !== 'df,who') {
      if (Date.now() > deadline) throw new Error(`the buttons did not follow: ${(await buttons()).join(',')}`);
      await p.waitForTimeout(25);
    }
    await p.locator('.console-shell-input').waitFor({ timeout: UI_TIMEOUT_MS });
    expect(await p.locator('.console-history .console-entry').count()).toBe(1);
    await p.click('.console-command[data-command="df"] .console-run');
    await waitText(p, '.console-status', (t) => t.startsWith('df: ok'), 'df ok on the restarted agent');
    expect(watch.errors).toEqual([]);
  }, 120_000);

  it.skipIf(!ptyAvailable())(
    'opens a terminal for an admin: typed keys reach the shell and its echo shows',
    async () => {
      // The gateway's default per-node frame rate (10/s, burst 20) applies: while a PTY is open the gateway does not
      // hold the agent to it (docs/console.md), and fast typing's echo must not cut the agent's link.
      const { tb, dash, agent } = await system('agent-pty', ['--allow-pty']);
      const { page: p, watch } = await page();
      await p.goto(`${dash.url}/#token=${await tb.keys.token('admin', 'adele')}`);
      await openConsole(p, 'agent-pty');
      await p.click('.console-terminal-open');
      await p.locator('.console-terminal .xterm-helper-textarea').waitFor({ timeout: UI_TIMEOUT_MS });
      await p.locator('.console-terminal .xterm-screen').click();
      await p.keyboard.type('echo pty-$((6*7))');
      await p.keyboard.press('Enter');
      // The shell's echo of the typed line, then the command's own output line.
      await waitText(p, '.console-terminal .xterm-rows', (t) => t.includes('echo pty-$((6*7))'), 'the echo');
      await waitText(p, '.console-terminal .xterm-rows', (t) => /pty-42/.test(t.replace('pty-$((6*7))', '')), '42');
      // The terminal's size reached the PTY: stty reports what xterm fitted (not the 80x24 default).
      const size = await p.evaluate(() => {
        const rows = document.querySelectorAll('.console-terminal .xterm-rows > div').length;
        return rows;
      });
      await p.keyboard.type('stty size');
      await p.keyboard.press('Enter');
      await waitText(p, '.console-terminal .xterm-rows', (t) => t.includes(`${size} `), `stty size ${size} …`);
      await screenshot(p, 'dashboard-console-terminal');
      // xterm's own <style> rules (blocked by the CSP) are live as constructed stylesheets: the cell size and theme.
      const mirrored = await p.evaluate(() =>
        document.adoptedStyleSheets.map((sheet) => [...sheet.cssRules].map((r) => r.cssText).join('\n')).join('\n'),
      );
      expect(mirrored).toContain('.xterm-rows');
      // The agent's link held all along (a rate-limit close would show as a reconnect).
      expect(agent.lines.filter((l) => l.includes('reconnecting'))).toEqual([]);
      // Closing the panel closes the PTY on the device (exec-cancel), and drops the mirrored stylesheets.
      await p.click('.console-close');
      await waitFor(async () => (await p.evaluate(() => document.adoptedStyleSheets.length)) === 0, 'sheets gone');
      await waitFor(
        async () => {
          const res = await fetch(`${tb.http}/api/v1/audit`, {
            headers: { authorization: `Bearer ${await tb.keys.token('admin', 'auditor')}` },
          });
          const body = await res.text();
          return res.ok && body.includes('"kind":"pty"') && body.includes('adele');
        },
        'the PTY in the audit log',
        UI_TIMEOUT_MS,
      );
      // The xterm DOM renderer's <style> elements are blocked by the CSP (reported as errors) and mirrored into
      // constructed stylesheets; no other error is allowed.
      expect(watch.errors.filter((e) => !/Content Security Policy|style-src/.test(e))).toEqual([]);
      expect(watch.dialogs).toEqual([]);
    },
    120_000,
  );
});
