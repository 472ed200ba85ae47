// The token revocation list: a small JSON file beside the key (`revoked.json`), written by
// `mycelium token revoke` and re-read by every broker and gateway that shares it. Polling the file's
// mtime (not fs.watch) works the same on every filesystem, including bind mounts and Docker volumes,
// and bounds how late a revocation is honoured by the poll interval.
import { readFileSync } from 'node:fs';
import { stat, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { writeFileAtomic } from './files.ts';
import type { Logger } from './log.ts';
import { CLOCK_SKEW_SECONDS } from './tokens.ts';

/** How often a RevocationList looks at its file; a revocation is honoured at most this late (plus a read). */
export const DEFAULT_REVOCATION_POLL_MS = 1000;

export const REVOCATION_FILE_NAME = 'revoked.json';

/** The revocation file shared by everything that uses `keyFile` (private or public): `revoked.json` beside it. */
export function revocationFileFor(keyFile: string): string {
  return join(dirname(keyFile), REVOCATION_FILE_NAME);
}

export interface RevocationEntry {
  jti: string;
  /** The revoked token's expiry (seconds since the epoch); the entry is dropped once it has passed. */
  exp?: number;
  /** When it was revoked (seconds since the epoch), for `mycelium token list-revoked`. */
  revokedAt: number;
}

interface RevocationFile {
  version: 1;
  revoked: RevocationEntry[];
}

/** Parses the file's text; throws a MyceliumError naming what is wrong. Never trusts prototypes. */
export function parseRevocationFile(text: string): RevocationEntry[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `revocation file is not JSON: ${(err as Error).message}`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data) || !Object.hasOwn(data, 'revoked')) {
    throw new MyceliumError(ErrorCode.Config, 'revocation file must be an object with a "revoked" array');
  }
  const list = (data as { revoked: unknown }).revoked;
  if (!Array.isArray(list)) throw new MyceliumError(ErrorCode.Config, '"revoked" must be an array');
  const out: RevocationEntry[] = [];
  for (const item of list) {
    if (typeof item !== 'object' || item === null) throw new MyceliumError(ErrorCode.Config, 'bad revocation entry');
    const { jti, exp, revokedAt } = item as Record<string, unknown>;
    if (typeof jti !== 'string' || jti === '')
      throw new MyceliumError(ErrorCode.Config, 'revocation entry without jti');
    const entry: RevocationEntry = { jti, revokedAt: typeof revokedAt === 'number' ? revokedAt : 0 };
    if (typeof exp === 'number' && Number.isFinite(exp)) entry.exp = exp;
    out.push(entry);
  }
  return out;
}

/** Reads the file; a missing file is an empty list. Throws on a malformed file. */
export function readRevocations(file: string): RevocationEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new MyceliumError(ErrorCode.Config, `cannot read revocation file ${file}: ${(err as Error).message}`);
  }
  return parseRevocationFile(text);
}

/**
 * Adds entries to the revocation file (0600, atomic), dropping entries whose token expired more than the
 * clock skew ago so the file does not grow forever. Returns the list as written.
 */
export function addRevocations(
  file: string,
  entries: ReadonlyArray<{ jti: string; exp?: number }>,
  nowSeconds = Math.floor(Date.now() / 1000),
): RevocationEntry[] {
  const current = readRevocations(file);
  const byJti = new Map<string, RevocationEntry>();
  for (const e of current) byJti.set(e.jti, e);
  for (const e of entries) {
    const entry: RevocationEntry = { jti: e.jti, revokedAt: nowSeconds };
    if (e.exp !== undefined) entry.exp = e.exp;
    byJti.set(e.jti, entry);
  }
  const kept = [...byJti.values()].filter((e) => e.exp === undefined || e.exp + CLOCK_SKEW_SECONDS >= nowSeconds);
  const body: RevocationFile = { version: 1, revoked: kept };
  writeFileAtomic(file, `${JSON.stringify(body, null, 2)}\n`, 0o600);
  return kept;
}

export interface RevocationListOptions {
  file: string;
  /** How often to look at the file's mtime (default DEFAULT_REVOCATION_POLL_MS). */
  pollMs?: number;
  log?: Logger;
}

/** The revoked token ids, kept current from the file. Missing file = nothing revoked. */
export class RevocationList {
  private revoked = new Set<string>();
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  /** mtime, size and inode of the last file read; any change triggers a re-read (rename changes the inode). */
  private seen = '';
  private polling = false;
  private readonly file: string;
  private readonly pollMs: number;
  private readonly log: Logger | undefined;

  constructor(opts: RevocationListOptions) {
    this.file = opts.file;
    this.pollMs = opts.pollMs ?? DEFAULT_REVOCATION_POLL_MS;
    this.log = opts.log;
  }

  async start(): Promise<void> {
    await this.poll();
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.poll().catch((err: unknown) => this.log?.warn({ err, file: this.file }, 'revocation list poll failed'));
    }, this.pollMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  isRevoked(jti: string | undefined): boolean {
    return jti !== undefined && this.revoked.has(jti);
  }

  get size(): number {
    return this.revoked.size;
  }

  /** Called after the list changed (for example to close live sessions whose token was just revoked). */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async poll(): Promise<void> {
    if (this.polling) return; // a slow filesystem must not stack reads
    this.polling = true;
    try {
      await this.reload();
    } finally {
      this.polling = false;
    }
  }

  private async reload(): Promise<void> {
    let signature: string;
    try {
      const s = await stat(this.file);
      signature = `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      signature = 'missing';
    }
    if (signature === this.seen) return;
    this.seen = signature;
    let entries: RevocationEntry[];
    if (signature === 'missing') {
      entries = [];
    } else {
      try {
        entries = parseRevocationFile(await readFile(this.file, 'utf8'));
      } catch (err) {
        // Keep the last good list: a half-edited or corrupt file must not un-revoke every token.
        this.log?.warn({ err, file: this.file }, 'revocation file unreadable; keeping the last good list');
        return;
      }
    }
    const next = new Set(entries.map((e) => e.jti));
    if (sameSet(next, this.revoked)) return;
    const added = [...next].filter((j) => !this.revoked.has(j)).length;
    this.revoked = next;
    this.log?.info({ file: this.file, revoked: next.size, added }, 'revocation list loaded');
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.log?.warn({ err }, 'revocation listener failed');
      }
    }
  }
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
