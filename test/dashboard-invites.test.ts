// Invitations and members in real headless Chromium: a real broker and accounts service (SQLite in a temporary
// directory, --dashboard-url set to the dashboard's address) on one bus, a real SMTP server (python3-aiosmtpd),
// two organisations with a WebSocket gateway and a node each, and the dashboard on its own origin. The admin
// invites from the Account dialog, the mail carries the dashboard link, a fresh browser accepts it and is signed in
// to its organisation; the link works once; the admin changes the member's role and disables them, and the
// member's open page is sent to sign-in within 5 s. Without SMTP the dialog shows the link once. Hostile strings
// stay text.
import { Writable } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDashboard } from '../dashboard/server/build.ts';
import { DashboardServer } from '../dashboard/server/server.ts';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { invitationLink, invitationText, smtpMailer } from '../services/accounts/mailer.ts';
import { accountsCommand } from '../services/accounts/command.ts';
import { AccountsService } from '../services/accounts/service.ts';
import { AccountsStore } from '../services/accounts/store.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { resolveConfig } from '../services/common/config.ts';
import { silentLogger } from '../services/common/log.ts';
import { launchBrowser, openPage, type PageWatch } from './helpers/browser.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import { mailBody, type SmtpServer, startSmtp } from './helpers/smtp.ts';
import { rawNode, startWsGateway } from './helpers/ws-gateway.ts';
import { startUp } from './helpers/up-process.ts';
import { waitFor } from './helpers/wait.ts';
import type { Browser } from 'playwright-core';

const UI_TIMEOUT_MS = 10_000;
/** The brief's bound: a disabled member's open page shows the sign-in form within this. */
const DISABLED_WITHIN_MS = 5_000;
const PASSWORD = 'a long enough password';
const INVITATION = /myi_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/;

let browser: Browser;
let distDir: string;
let smtp: SmtpServer;
const dir = mkdtempSync(join(tmpdir(), 'myc-dash-invites-'));
let cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

beforeAll(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'myc-dash-invites-dist-'));
  await buildDashboard(distDir);
  browser = await launchBrowser();
  smtp = await startSmtp();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await smtp?.stop();
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
  logLines: string[];
}

let dbSeq = 0;
/**
 * lab-a (adam its admin) and lab-b, a gateway and a node in each, the dashboard, and the accounts service with
 * --dashboard-url (and SMTP when `mail`). The broker must list the dashboard's origin and the dashboard must know
 * the broker's URL: a placeholder broker takes a port, the dashboard starts with it, the accounts service learns
 * the dashboard's URL, and the real broker starts on that port (as test/dashboard-accounts.test.ts does).
 */
async function system(mail: boolean): Promise<System> {
  const keys = makeKeys();
  const bus = new MemoryBus();
  await bus.start();
  cleanup(() => bus.stop());
  const db = join(dir, `accounts-${++dbSeq}.db`);
  const store = new AccountsStore(new SqliteDriver(db));
  await store.open();
  cleanup(() => store.close());
  const orgA = (await createOrg(store, 'lab-a')).id;
  const orgB = (await createOrg(store, 'lab-b')).id;
  await addUser(store, { name: 'adam', password: PASSWORD, org: 'lab-a', role: 'admin' });

  const placeholder = await startBroker({}, keys, bus);
  const port = placeholder.broker.port;
  const dash = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl: placeholder.ws, title: 'Invites test', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  await dash.start();
  cleanup(() => dash.stop());
  await placeholder.stop();

  const logLines: string[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _enc, done) {
        logLines.push(chunk.toString());
        done();
      },
    }),
  );
  const service = new AccountsService(
    { revocationPollMs: 100, dashboardUrl: dash.url },
    {
      bus,
      store: new AccountsStore(new SqliteDriver(db)),
      privateKey: keys.privateKey,
      log,
      ...(mail ? { mailer: smtpMailer({ url: smtp.url, from: 'hub@lab.example', deadlineMs: 5000 }) } : {}),
    },
  );
  await service.start();
  cleanup(() => service.stop());
  const tb = await startBroker({ port, sessionSweepMs: 100, dashboardOrigin: [dash.url] }, keys, bus);
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
  const root = await keys.token('admin', 'root');
  await waitFor(async () => {
    const res = await fetch(`${tb.http}/api/v1/nodes`, { headers: { authorization: `Bearer ${root}` } });
    return ((await res.json()) as unknown[]).length === 2;
  }, 'both nodes known to the broker');
  return { tb, dash, store, logLines };
}

async function open(url: string): Promise<{ page: Page; watch: PageWatch }> {
  const opened = await openPage(browser);
  cleanup(() => opened.context.close());
  await opened.page.goto(url);
  return opened;
}

/** Waits for `selector`'s text to satisfy `pred`; a timeout says the last text seen. */
async function waitText(p: Page, selector: string, pred: (t: string) => boolean, what: string): Promise<string> {
  let last: string | undefined;
  try {
    return await waitFor(
      async () => {
        last = await p.$eval(selector, (el) => el.textContent ?? '').catch(() => undefined);
        return last !== undefined && pred(last) ? last : undefined;
      },
      what,
      UI_TIMEOUT_MS,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last text of ${selector}: ${JSON.stringify(last)}`);
  }
}

const card = (uid: string) => `article.card[data-uid="${uid}"]`;

/** The admin signs in and opens the Account dialog. */
async function adminDialog(s: System): Promise<Page> {
  const { page: p } = await open(s.dash.url);
  await p.waitForSelector('#signin-user', { timeout: UI_TIMEOUT_MS });
  await p.fill('#signin-user', 'adam');
  await p.fill('#signin-password', PASSWORD);
  await p.click('#signin-submit');
  await waitText(p, '#role', (t) => t === 'admin', 'the admin role');
  await p.click('#account-open');
  await p.waitForSelector('#invite-page:not([hidden])', { timeout: UI_TIMEOUT_MS });
  await p.waitForSelector('#members-table tr[data-user="adam"]', { timeout: UI_TIMEOUT_MS });
  return p;
}

async function accept(p: Page, user: string, password = PASSWORD, again = password): Promise<void> {
  await p.waitForSelector('#invite-accept', { timeout: UI_TIMEOUT_MS });
  await p.fill('#invite-user', user);
  await p.fill('#invite-password', password);
  await p.fill('#invite-password2', again);
  await p.click('#invite-submit');
}

describe('the invitation text', () => {
  it('with --dashboard-url: the link with the invitation in the fragment, no REST recipe', () => {
    const mail = { to: 'e@x', org: 'lab-a', role: 'viewer', invitation: 'myi_x', expiresAt: 0 };
    expect(invitationLink('http://h:8080/', 'myi_x')).toBe('http://h:8080/#invite=myi_x');
    const text = invitationText({ ...mail, link: invitationLink('http://h:8080', 'myi_x') });
    expect(text).toContain('http://h:8080/#invite=myi_x');
    expect(text).not.toContain('POST /api/v1/invitations/accept');
    expect(invitationText(mail)).toContain('POST /api/v1/invitations/accept');
  });
});

describe('mycelium accounts --dashboard-url', () => {
  it('takes an http(s) URL and refuses anything else before the database is opened', async () => {
    const keys = makeKeys();
    const bus = new MemoryBus();
    await bus.start();
    cleanup(() => bus.stop());
    const build = (url: string) =>
      accountsCommand.build(
        resolveConfig(
          accountsCommand.options,
          ['--db', `sqlite:${join(dir, 'cmd.db')}`, '--key-file', keys.keyFile, '--dashboard-url', url],
          {},
        ) as never,
        silentLogger(),
        { bus },
      );
    await expect(build('javascript:alert(1)')).rejects.toThrow(/--dashboard-url/);
    await expect(build('ftp://h/')).rejects.toThrow(/--dashboard-url/);
    const component = await build('http://localhost:8080');
    await component.start();
    await component.stop();
  });

  it("mycelium up passes its own dashboard's URL to the accounts service", async () => {
    const up = await startUp({ args: ['--services', 'broker,dashboard', '--accounts', 'on', '--log-level', 'info'] });
    cleanup(() => up.kill());
    const said = `${up.out.stdout}${up.out.stderr}`;
    expect(said).toContain('invitations link to the dashboard');
    expect(said).toContain(`"dashboardUrl":"http://localhost:${up.ports.dashboard}"`);
  }, 60_000);
});

describe('dashboard invitations and members', { timeout: 120_000 }, () => {
  it('invited by mail: the link signs the person in once; the admin changes their role and disables them', async () => {
    const s = await system(true);
    const admin = await adminDialog(s);
    await admin.fill('#invite-email', 'eve@lab.example');
    await admin.selectOption('#invite-role', 'viewer');
    await admin.click('#invite-send');
    await waitText(admin, '#invite-status', (t) => t.startsWith('Invitation sent to eve@lab.example'), 'sent');
    expect(await admin.isHidden('#invite-made')).toBe(true);

    // The mail carries the dashboard link, the invitation in its fragment; the log does not hold it.
    const body = mailBody(await smtp.mailTo('eve@lab.example', UI_TIMEOUT_MS));
    const link = new RegExp(`${s.dash.url.replace(/[.]/g, '\\.')}/#invite=(${INVITATION.source})`).exec(body);
    expect(link, body).not.toBeNull();
    const [url, invitation] = link as RegExpExecArray;
    expect(s.logLines.join('\n')).not.toContain(invitation);

    // A fresh browser opens the link: the invitation leaves the address bar; the form, not the sign-in, is shown.
    const { page: eve, watch } = await open(url);
    await eve.waitForSelector('#invite-accept', { timeout: UI_TIMEOUT_MS });
    expect(eve.url()).not.toContain('myi_');
    expect(await eve.isHidden('#signin')).toBe(true);
    // Two different passwords never reach the broker; a hostile name is refused and shown as text.
    await accept(eve, 'eve', PASSWORD, 'another password');
    await waitText(eve, '#invite-message', (t) => t.includes('differ'), 'the passwords differ');
    await accept(eve, '<img src=x onerror=alert(1)>');
    await waitText(eve, '#invite-message', (t) => t.startsWith('Not accepted:') && t.includes('400'), 'bad name');
    expect(await eve.$('#invite-message img')).toBeNull();
    // Accepted: signed in with the same credentials, lab-a's node and not lab-b's.
    await accept(eve, 'eve');
    await waitText(eve, `${card('node-a')} .card-title`, (t) => t === 'Lab A sensor', "lab-a's node");
    await waitText(eve, '#account-who', (t) => t === 'eve · lab-a', 'who is signed in');
    expect(await eve.textContent('#role')).toBe('viewer');
    expect(await eve.$(card('node-b'))).toBeNull();
    expect(await eve.isHidden('#login')).toBe(true);
    expect(await eve.$('#invite-accept')).toBeNull();
    expect(watch.dialogs).toEqual([]);

    // The same link a second time is refused, with the broker's words on the page.
    const { page: again } = await open(url);
    await accept(again, 'eve2');
    await waitText(
      again,
      '#invite-message',
      (t) => t.startsWith('Not accepted:') && t.includes('used or expired') && t.includes('404'),
      'the spent invitation refused',
    );
    expect(await s.store.userByName('eve2')).toBeUndefined();

    // The admin sees the new member (the list is read when the dialog opens), changes the role, disables them.
    await admin.click('.acct-close');
    await admin.click('#account-open');
    const row = 'tr[data-user="eve"]';
    await admin.waitForSelector(`${row}[data-state="active"]`, { timeout: UI_TIMEOUT_MS });
    expect(await admin.inputValue(`${row} select.member-role`)).toBe('viewer');
    await admin.selectOption(`${row} select.member-role`, 'operator');
    await waitText(admin, '#members-status', (t) => t.includes('eve is now operator'), 'role changed');
    const user = await s.store.userByName('eve');
    expect((await s.store.memberships(user!.id)).map((m) => m.role)).toEqual(['operator']);

    await admin.click(`${row} .member-disable`);
    expect(await s.store.userByName('eve')).toMatchObject({ disabled: false }); // asked first, in the row
    const disabledAt = Date.now();
    await admin.click(`${row} .member-disable-confirm`);
    await admin.waitForSelector(`${row}[data-state="disabled"]`, { timeout: UI_TIMEOUT_MS });
    await waitFor(
      async () =>
        ((await eve.$eval('#signin-message', (el) => el.textContent ?? '').catch(() => '')) as string).includes(
          'session has ended',
        ),
      "the disabled member's page at sign-in",
      DISABLED_WITHIN_MS,
    );
    console.info(`disabled member's page at sign-in after ${Date.now() - disabledAt} ms`);
    expect(await eve.isVisible('#login')).toBe(true);
    expect(await eve.$(card('node-a'))).toBeNull();

    // Enabled again from the same row.
    await admin.click(`${row} .member-enable`);
    await admin.waitForSelector(`${row}[data-state="active"]`, { timeout: UI_TIMEOUT_MS });
  });

  it('without SMTP: the link is shown once (hostile email as text), the log carries the link; add a user', async () => {
    const s = await system(false);
    const admin = await adminDialog(s);
    const hostile = '<b>mallory</b>@lab.example';
    await admin.fill('#invite-email', hostile);
    await admin.click('#invite-send');
    await admin.waitForSelector('#invite-link', { timeout: UI_TIMEOUT_MS });
    const link = await admin.inputValue('#invite-link');
    expect(link).toMatch(new RegExp(`^${s.dash.url.replace(/[.]/g, '\\.')}/#invite=${INVITATION.source}$`));
    await waitText(admin, '#invite-status', (t) => t.includes(`pass the link to ${hostile}`), 'the link to pass on');
    expect(await admin.textContent('#invite-made')).toContain(hostile);
    expect(await admin.$('#invite-page b')).toBeNull();
    // The operator's log line holds the same link (the one line with a secret, on purpose, without SMTP).
    expect(s.logLines.some((l) => l.includes(link))).toBe(true);
    // Done wipes it from the page.
    await admin.click('#invite-done');
    await admin.waitForSelector('#invite-link', { state: 'detached', timeout: UI_TIMEOUT_MS });
    expect(await admin.content()).not.toContain(link.split('#invite=')[1]);

    // Add a user with a password: listed, and they can sign in.
    await admin.fill('#member-name', 'otto');
    await admin.fill('#member-password', PASSWORD);
    await admin.selectOption('#member-role', 'operator');
    await admin.click('#member-add-submit');
    await admin.waitForSelector('tr[data-user="otto"]', { timeout: UI_TIMEOUT_MS });
    expect(await admin.inputValue('#member-password')).toBe('');
    expect(await admin.inputValue('tr[data-user="otto"] select.member-role')).toBe('operator');
    const login = await fetch(`${s.tb.http}/api/v1/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'otto', password: PASSWORD }),
    });
    expect(login.status).toBe(200);
    // Accepting is an anonymous write: a listed dashboard origin may read the answer (services/broker/cors.ts),
    // a foreign one may not (its browser shows it nothing).
    const acceptFrom = async (origin: string) =>
      (
        await fetch(`${s.tb.http}/api/v1/invitations/accept`, {
          method: 'POST',
          headers: { origin, 'content-type': 'application/json' },
          body: JSON.stringify({ invitation: 'myi_0000000000000000_x', username: 'nobody', password: PASSWORD }),
        })
      ).headers.get('access-control-allow-origin');
    expect(await acceptFrom(s.dash.url)).toBe(s.dash.url);
    expect(await acceptFrom('http://evil.example')).toBeNull();
    // A name taken is the broker's refusal, as text.
    await admin.fill('#member-name', 'otto');
    await admin.fill('#member-password', PASSWORD);
    await admin.click('#member-add-submit');
    await waitText(admin, '#members-status', (t) => t.startsWith('Not added:') && t.includes('409'), 'name taken');
  });
});
