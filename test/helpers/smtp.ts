// A real SMTP server for tests: Debian's python3-aiosmtpd (`python3 -m aiosmtpd`), whose default handler prints
// every mail it accepts to stdout between two marker lines. aiosmtpd does not tell which port it took when given
// port 0, so a free port is chosen first and the start retried on another if someone took it meanwhile.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect as tcpConnect } from 'node:net';
import { guard, terminate } from './child-process.ts';
import { waitFor } from './wait.ts';
import { freePort } from './ports.ts';

/** Debian's python3, which has the python3-aiosmtpd package (a python3 earlier on PATH may not). */
export const SMTP_PYTHON = process.env.SMTP_PYTHON ?? '/usr/bin/python3';
const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const START_ATTEMPTS = 5;
const BEGIN = '---------- MESSAGE FOLLOWS ----------';
const END = '------------ END MESSAGE ------------';

export interface SmtpServer {
  port: number;
  url: string;
  /** Every mail accepted so far, as aiosmtpd printed it (headers, a blank line, the body). */
  readonly mails: string[];
  /** The first mail (already received or coming) that contains `text`. */
  mailTo(text: string, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

export async function startSmtp(): Promise<SmtpServer> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const port = await freePort();
    try {
      return await launch(port);
    } catch (err) {
      lastErr = err;
    }
  }
  throw new Error(`aiosmtpd did not start after ${START_ATTEMPTS} attempts`, { cause: lastErr });
}

async function launch(port: number): Promise<SmtpServer> {
  const child: ChildProcess = spawn(SMTP_PYTHON, ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  const mails: string[] = [];
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
    for (;;) {
      const begin = out.indexOf(BEGIN);
      const end = out.indexOf(END, begin);
      if (begin < 0 || end < 0) break;
      mails.push(out.slice(begin + BEGIN.length, end).trim());
      out = out.slice(end + END.length);
    }
  });
  child.stderr?.on('data', (c: Buffer) => {
    err = (err + c.toString()).slice(-4096);
  });
  await once(child, 'spawn');
  guard(child);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await probe(port))) {
    if (child.exitCode !== null) throw new Error(`aiosmtpd exited (code ${child.exitCode}):\n${err}`);
    if (Date.now() > deadline) {
      await terminate(child, STOP_TIMEOUT_MS);
      throw new Error(`aiosmtpd did not listen on ${port} within ${READY_TIMEOUT_MS} ms:\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    mails,
    mailTo: (text, timeoutMs) => waitFor(() => mails.find((m) => m.includes(text)), `a mail with ${text}`, timeoutMs),
    stop: () => terminate(child, STOP_TIMEOUT_MS),
  };
}

/** A mail's body, quoted-printable decoded when the mail says so (nodemailer uses it for long lines). */
export function mailBody(mail: string): string {
  const split = mail.search(/\r?\n\r?\n/);
  const headers = mail.slice(0, split);
  const body = mail.slice(split).trim();
  if (!/content-transfer-encoding:\s*quoted-printable/i.test(headers)) return body;
  const bytes = body
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

/** A header's value (the first of that name). */
export function mailHeader(mail: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:\\s*(.*)$`, 'im').exec(mail);
  return m?.[1].trim();
}

function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      s.destroy();
      resolve(false);
    });
  });
}
