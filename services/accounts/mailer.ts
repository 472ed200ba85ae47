// Invitation mail through SMTP (--smtp-url), with nodemailer. nodemailer is loaded at the first mail, not at
// start-up: a service without --smtp-url never loads it. The URL may hold credentials (smtp://user:pass@host), so
// it is never logged: only its host and port are.
import type { Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport';
import { cjsExports } from '../common/cjs.ts';

/** What an invitation mail says. */
export interface InvitationMail {
  to: string;
  org: string;
  role: string;
  /** The invitation text (`myi_…`): the secret the mail carries. */
  invitation: string;
  expiresAt: number;
  /** `<dashboard-url>/#invite=<invitation>` when the service knows the dashboard (--dashboard-url). */
  link?: string;
}

export interface Mailer {
  /** Resolves once the SMTP server accepted the mail; rejects (within `deadlineMs`) otherwise. */
  sendInvitation(mail: InvitationMail): Promise<void>;
  close(): void;
}

export interface SmtpOptions {
  /** smtp://host:port (STARTTLS when the server offers it) or smtps://host:port; credentials in the URL. */
  url: string;
  from: string;
  /** A whole send fails after this (the broker's relay waits 10 s for the accounts service's answer). */
  deadlineMs?: number;
}

export const SMTP_DEADLINE_MS = 7_000;

/**
 * The scheme, host and port of an SMTP URL, for log lines (never the credentials); undefined when it is not an
 * smtp:// or smtps:// URL with a host (the one check of --smtp-url).
 */
export function smtpTarget(url: string): string | undefined {
  try {
    const u = new URL(url);
    if ((u.protocol !== 'smtp:' && u.protocol !== 'smtps:') || u.host === '') return undefined;
    return `${u.protocol}//${u.host}`;
  } catch {
    return undefined;
  }
}

/**
 * The dashboard link that accepts an invitation. The invitation goes in the fragment: a browser never sends it to
 * a server, so it lands in no access log (the dashboard takes it out of the address bar, like `#token=`).
 */
export function invitationLink(dashboardUrl: string, invitation: string): string {
  return `${dashboardUrl.replace(/\/+$/, '')}/#invite=${invitation}`;
}

/** The mail's text: what the invitation is for, and how to accept it (the dashboard link, or over REST). */
export function invitationText(mail: InvitationMail): string {
  const head = `You are invited to the organisation ${mail.org} on Mycelium, as ${mail.role}.`;
  const until = `It works once, until ${new Date(mail.expiresAt).toISOString()}.`;
  if (mail.link !== undefined) {
    return [
      head,
      '',
      'Open this link, then choose a user name and a password (8 characters or more):',
      '',
      mail.link,
      '',
      until,
    ].join('\r\n');
  }
  return [
    head,
    '',
    'Choose a user name and a password (8 characters or more) and accept the invitation with:',
    '',
    `Invitation: ${mail.invitation}`,
    '',
    `POST /api/v1/invitations/accept {"invitation":"${mail.invitation}","username":"…","password":"…"}`,
    '',
    until,
  ].join('\r\n');
}

export function smtpMailer(options: SmtpOptions): Mailer {
  const deadlineMs = options.deadlineMs ?? SMTP_DEADLINE_MS;
  let transport: Promise<Transporter> | undefined;
  const load = async (): Promise<Transporter> => {
    const nodemailer = cjsExports(await import('nodemailer'), 'createTransport');
    // Each step has its own limit below the overall deadline, so a silent server costs a socket, not a leak.
    const step = Math.max(1000, Math.floor(deadlineMs / 2));
    const limits: SMTPTransport.Options = { connectionTimeout: step, greetingTimeout: step, socketTimeout: step };
    return nodemailer.createTransport(options.url, limits);
  };
  return {
    async sendInvitation(mail) {
      transport ??= load();
      // A failed load (nodemailer missing) is tried again at the next mail rather than remembered.
      const t = await transport.catch((err: unknown) => {
        transport = undefined;
        throw err;
      });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer from the SMTP server in ${deadlineMs} ms`)), deadlineMs);
      });
      try {
        await Promise.race([
          t.sendMail({
            from: options.from,
            to: mail.to,
            subject: `Your invitation to ${mail.org} on Mycelium`,
            text: invitationText(mail),
          }),
          deadline,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    close() {
      transport?.then((t) => t.close()).catch(() => undefined);
    },
  };
}
