// Provisioning by PIN, the device's side (issue 15, rhizo-server's flow; docs/accounts.md "PIN provisioning"): a
// device with no credential asks the broker for a PIN (`POST /api/v1/pins`), shows it plainly for a person to claim
// in Mycelium, and polls `GET /api/v1/pins/:pin` with the poll secret until the claim hands it its device key.
// Used by `mycelium agent --pin` and the WS and MQTT test nodes. With a key file (--key-out) the key is kept (0600)
// and read back at the next start, so a restarted device does not ask again.
import { existsSync, readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { isApiKeyText } from '../accounts/protocol.ts';
import type { OptionTable } from '../common/config.ts';
import { writeFileAtomic } from '../common/files.ts';
import { checkOwnerOnly } from '../common/keys.ts';
import type { Logger } from '../common/log.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { isIdentifier } from '../protocol/schema.ts';

export const PIN_DEFAULTS = {
  brokerUrl: 'http://localhost:8000',
  /** Between two polls of the PIN (the broker's limits expect no faster). */
  pollMs: 2000,
  /** Longest Retry-After honoured; a longer one (or a broken header) waits this long. */
  maxRetryAfterMs: 60_000,
  /** A request the broker does not answer within this is retried. */
  requestTimeoutMs: 10_000,
} as const;

export interface PinOptions {
  /** The broker's HTTP address (`http://host:8000`). */
  brokerUrl: string;
  log: Logger;
  pollMs?: number;
  /** Where the PIN is shown, one plain line (default: stderr). */
  show?: (line: string) => void;
  /** Ends the wait (the device is stopping): the promise rejects with the abort reason. */
  signal?: AbortSignal;
}

export interface ProvisionedKey {
  key: string;
  /** The node the claim named: the device's uid from now on. */
  node: string;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
  retryAfterMs?: number;
}

/** Asks for PINs until one is claimed; resolves with the key it delivered. Retries every failure, never gives up. */
export async function provisionByPin(options: PinOptions): Promise<ProvisionedKey> {
  const pollMs = options.pollMs ?? PIN_DEFAULTS.pollMs;
  const show = options.show ?? ((line: string) => process.stderr.write(`${line}\n`));
  const base = new URL('/api/v1/pins', options.brokerUrl).toString();
  for (;;) {
    const made = await call(base, { method: 'POST' }, options).catch((err: unknown) => failure(err, options));
    if (made.status !== 200 && made.status !== 201) {
      options.log.warn({ status: made.status, error: made.body.error }, 'no PIN from the broker; asking again');
      await delay(made.retryAfterMs ?? pollMs, undefined, { signal: options.signal });
      continue;
    }
    const { pin, secret, expiresIn } = made.body;
    if (typeof pin !== 'string' || !/^\d{4,6}$/.test(pin) || typeof secret !== 'string') {
      options.log.warn('the broker answered a PIN request without a PIN; asking again');
      await delay(pollMs, undefined, { signal: options.signal });
      continue;
    }
    const lifetimeMs = (typeof expiresIn === 'number' ? expiresIn : 600) * 1000;
    show(`PIN ${pin}: claim this device in Mycelium within ${Math.round(lifetimeMs / 60_000)} minutes`);
    options.log.info({ pin }, 'waiting for the PIN to be claimed');
    const key = await pollPin(`${base}/${pin}`, secret, Date.now() + lifetimeMs, pollMs, options);
    if (key !== undefined) {
      options.log.info({ pin, node: key.node }, 'PIN claimed: device key received');
      return key;
    }
    options.log.info({ pin }, 'PIN expired or gone; asking for a new one');
  }
}

/** Polls one PIN until it is claimed (the key), or gone or expired (undefined: ask for a new PIN). */
async function pollPin(
  url: string,
  secret: string,
  deadline: number,
  pollMs: number,
  options: PinOptions,
): Promise<ProvisionedKey | undefined> {
  let wait = pollMs;
  while (Date.now() < deadline) {
    await delay(wait, undefined, { signal: options.signal });
    wait = pollMs;
    // The secret travels in a header only: a PIN alone (six digits, guessable) is worth nothing without it.
    const init = { method: 'GET', headers: { 'x-pin-secret': secret } };
    const answer = await call(url, init, options).catch((err: unknown) => failure(err, options));
    if (answer.status === 429) {
      wait = answer.retryAfterMs ?? pollMs;
      continue;
    }
    if (answer.status === 404 || answer.status === 410) return undefined;
    if (answer.status !== 200) continue;
    const { status, key, node } = answer.body;
    if (status !== 'claimed') continue;
    if (typeof key !== 'string' || !isApiKeyText(key) || isIdentifier(node) !== undefined) {
      options.log.error('the claimed PIN delivered something that is not a device key; asking for a new PIN');
      return undefined;
    }
    return { key, node: node as string };
  }
  return undefined;
}

async function call(url: string, init: RequestInit, options: PinOptions): Promise<Answer> {
  const timeout = AbortSignal.timeout(PIN_DEFAULTS.requestTimeoutMs);
  const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
  const res = await fetch(url, { ...init, signal });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) body = parsed as typeof body;
  } catch {
    // not JSON: the status says enough
  }
  const answer: Answer = { status: res.status, body };
  const retryAfter = res.headers.get('retry-after');
  if (retryAfter !== null) answer.retryAfterMs = retryAfterMs(retryAfter);
  return answer;
}

/** A network failure is an answer with status 0 (retried), unless the device is stopping. */
function failure(err: unknown, options: PinOptions): Answer {
  if (options.signal?.aborted) throw options.signal.reason;
  options.log.debug({ err: (err as Error).message }, 'broker not reachable for the PIN');
  return { status: 0, body: {} };
}

/** Retry-After in seconds (RFC 9110 §10.2.3; the date form is not used by Mycelium), capped. */
export function retryAfterMs(header: string): number {
  const seconds = Number(header);
  if (!Number.isFinite(seconds) || seconds < 0) return PIN_DEFAULTS.maxRetryAfterMs;
  return Math.min(PIN_DEFAULTS.maxRetryAfterMs, Math.ceil(seconds * 1000));
}

/** A key file written by an earlier `--pin`: refused when others may read it, like --token-file. */
export function readKeyFile(file: string): ProvisionedKey | undefined {
  if (!existsSync(file)) return undefined;
  checkOwnerOnly(file, 'a device key file');
  const [key, node] = readFileSync(file, 'utf8').trim().split(/\s+/);
  if (key === undefined || !isApiKeyText(key) || isIdentifier(node) !== undefined) {
    throw new MyceliumError(ErrorCode.Config, `${file} does not hold a device key (delete it to ask for a new PIN)`);
  }
  return { key, node: node as string };
}

/**
 * The device's key: read from `keyFile` when an earlier run saved one, else provisioned by PIN and saved there
 * (0600, atomic; the node name after the key, so an MQTT node knows its id too).
 */
export async function deviceKey(options: PinOptions & { keyFile?: string }): Promise<ProvisionedKey> {
  const saved = options.keyFile === undefined ? undefined : readKeyFile(options.keyFile);
  if (saved !== undefined) {
    options.log.info({ file: options.keyFile, node: saved.node }, 'device key read from the key file');
    return saved;
  }
  const got = await provisionByPin(options);
  if (options.keyFile !== undefined) {
    writeFileAtomic(options.keyFile, `${got.key} ${got.node}\n`, 0o600);
    options.log.info({ file: options.keyFile }, 'device key saved');
  }
  return got;
}

/** The `--pin` flags of `mycelium agent` and the test nodes (`mycelium node ws|mqtt`). */
export const pinOptions = {
  pin: {
    type: 'boolean',
    default: false,
    description: 'with no token: get a device key by PIN (printed on stderr; claim it in Mycelium)',
  },
  brokerUrl: {
    type: 'string',
    default: PIN_DEFAULTS.brokerUrl,
    description: "the broker's HTTP address, where --pin asks for a PIN",
  },
  keyOut: { type: 'string', description: 'with --pin: keep the key in this file (0600) and use it at the next start' },
  pinPollMs: { type: 'number', default: PIN_DEFAULTS.pollMs, min: 100, description: 'with --pin: between two polls' },
} as const satisfies OptionTable;

/** What a device needs from `pinOptions` once `--pin` is given. */
export interface PinNodeOptions {
  brokerUrl: string;
  keyOut?: string;
  pinPollMs?: number;
}

/** Gets the device key in the background and calls `use` with it; a failure other than stopping is logged. */
export function keyByPin(
  options: PinNodeOptions,
  log: Logger,
  signal: AbortSignal,
  use: (key: ProvisionedKey) => void,
): void {
  const { brokerUrl, keyOut, pinPollMs } = options;
  deviceKey({ brokerUrl, keyFile: keyOut, pollMs: pinPollMs, log, signal }).then(use, (err: unknown) => {
    if (!signal.aborted) log.error({ err }, 'no device key: the device cannot connect');
  });
}
