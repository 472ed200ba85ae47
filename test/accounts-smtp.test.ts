// Invitations through a real SMTP server (Debian's python3-aiosmtpd): the admin hears only `sent: true`, the mail
// carries the invitation, the person accepts it and signs in; no log line holds it. A mail the server does not
// take is a 502 and leaves no invitation behind.
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, createOrg } from '../services/accounts/admin.ts';
import { accountsCommand } from '../services/accounts/command.ts';
import { smtpMailer } from '../services/accounts/mailer.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { resolveConfig } from '../services/common/config.ts';
import { silentLogger } from '../services/common/log.ts';
import { makeKeys } from './helpers/keys.ts';
import { type AccountsRig, startAccounts } from './helpers/accounts.ts';
import { mailBody, mailHeader, type SmtpServer, startSmtp } from './helpers/smtp.ts';

const PW = 'a long enough password';
const logLines: string[] = [];
const capture = pino(
  { level: 'debug' },
  new Writable({
    write(chunk, _enc, done) {
      logLines.push(chunk.toString());
      done();
    },
  }),
);

let smtp: SmtpServer;
let rig: AccountsRig;
let orgA: string;
let adam: string;

beforeAll(async () => {
  smtp = await startSmtp();
  rig = await startAccounts(
    {},
    { log: capture, mailer: smtpMailer({ url: smtp.url, from: 'hub@lab.example', deadlineMs: 3000 }) },
  );
  orgA = (await createOrg(rig.store, 'lab-a')).id;
  await addUser(rig.store, { name: 'adam', password: PW, org: 'lab-a', role: 'admin' });
  adam = await rig.signIn('adam', PW);
}, 60_000);

afterAll(async () => {
  await rig?.stop();
  await smtp?.stop();
});

const invite = (body: unknown) => rig.http('POST', '/api/v1/invitations', { token: adam, body });

describe('invitations by SMTP', { timeout: 60_000 }, () => {
  it('mails the invitation; the admin gets sent:true only; the person accepts it from the mail and signs in', async () => {
    const made = await invite({ email: 'ines@lab.example', role: 'operator' });
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ email: 'ines@lab.example', role: 'operator', org: 'lab-a', sent: true });
    expect(made.body.invitation).toBeUndefined();
    expect(JSON.stringify(made.body)).not.toContain('myi_');

    const mail = await smtp.mailTo('ines@lab.example');
    expect(mailHeader(mail, 'From')).toBe('hub@lab.example');
    expect(mailHeader(mail, 'To')).toBe('ines@lab.example');
    expect(mailHeader(mail, 'Subject')).toContain('lab-a');
    const invitation = /myi_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/.exec(mailBody(mail))?.[0];
    expect(invitation).toBeDefined();

    const accept = await rig.http('POST', '/api/v1/invitations/accept', {
      body: { invitation, username: 'ines', password: PW },
    });
    expect(accept.status).toBe(201);
    expect(accept.body).toEqual({ username: 'ines', org: 'lab-a', role: 'operator' });
    expect(decodeJwt(await rig.signIn('ines', PW))).toMatchObject({ sub: 'ines', role: 'operator', org: orgA });

    const all = logLines.join('');
    expect(all).toContain('invitation mailed');
    expect(all).not.toContain(invitation!.slice(21)); // the secret part, in no log line
  });

  it('a typo on acceptance does not spend the invitation', async () => {
    await invite({ email: 'otto@lab.example' });
    const invitation = /myi_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/.exec(mailBody(await smtp.mailTo('otto@lab.example')))![0];
    const accept = (username: string, password: string) =>
      rig.http('POST', '/api/v1/invitations/accept', { body: { invitation, username, password } });
    expect((await accept('otto', 'short')).status).toBe(400);
    expect((await accept('__proto__', PW)).status).toBe(400);
    expect((await accept('otto', PW)).status).toBe(201);
    expect((await accept('otto2', PW)).status).toBe(404);
  });

  it('refuses an address that would inject a header', async () => {
    const before = smtp.mails.length;
    expect((await invite({ email: 'a@lab.example\r\nBcc: eve@evil.example' })).status).toBe(400);
    expect((await invite({ email: `${'a'.repeat(250)}@lab.example` })).status).toBe(400);
    expect(smtp.mails.length).toBe(before);
  });

  it('a server that accepts the connection and never speaks: the send fails by its deadline, not in minutes', async () => {
    const held: Socket[] = [];
    const silent = createServer((socket) => held.push(socket)).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const { port } = silent.address() as { port: number };
    const mailer = smtpMailer({ url: `smtp://127.0.0.1:${port}`, from: 'hub@lab.example', deadlineMs: 1000 });
    const started = Date.now();
    try {
      await expect(
        mailer.sendInvitation({ to: 'x@lab.example', org: 'lab-a', role: 'viewer', invitation: 'myi_x', expiresAt: 0 }),
      ).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      mailer.close();
      for (const s of held) s.destroy();
      silent.close();
    }
  });

  it('the SMTP server gone: 502 for the admin, and no invitation is left usable', async () => {
    const before = (await rig.store.listInvitations(orgA)).length;
    await smtp.stop();
    const failed = await invite({ email: 'nora@lab.example' });
    expect(failed.status).toBe(502);
    expect(failed.body.message).toMatch(/could not be sent/);
    expect(failed.body.invitation).toBeUndefined();
    const after = await rig.store.listInvitations(orgA);
    expect(after.length).toBe(before);
    expect(after.some((i) => i.email === 'nora@lab.example')).toBe(false);
    expect(logLines.join('')).toContain('invitation mail not sent');
    // The service keeps serving.
    expect((await rig.http('GET', '/api/v1/orgs', { token: adam })).status).toBe(200);
  });

  it('mycelium accounts --smtp-url: an smtp:// or smtps:// URL is taken, anything else refused before the database', async () => {
    const keys = makeKeys();
    const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-smtp-cmd-'));
    const bus = new MemoryBus();
    await bus.start();
    const build = (url: string) =>
      accountsCommand.build(
        resolveConfig(
          accountsCommand.options,
          [
            '--db',
            `sqlite:${join(dir, 'h.db')}`,
            '--key-file',
            keys.keyFile,
            '--smtp-url',
            url,
            '--smtp-from',
            'a@b.c',
          ],
          {},
        ) as never,
        silentLogger(),
        { bus },
      );
    try {
      await expect(build('http://127.0.0.1:25')).rejects.toThrow(/--smtp-url/);
      await expect(build('smtp:')).rejects.toThrow(/--smtp-url/);
      const component = await build(`smtp://127.0.0.1:${smtp.port}`);
      await component.start();
      await component.stop();
    } finally {
      await bus.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
