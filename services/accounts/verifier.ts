// API key verification for the broker and the gateways: asks the accounts service once, caches the answer, and
// keeps the list of revoked keys and disabled users that the service broadcasts, so a cached key, an open session
// opened with a key, and a user's access token are all refused within a broadcast (the service polls the database
// every second: a `mycelium key revoke` on another machine is seen too). `isRevoked(jti)` plugs into the broker's
// existing session sweep, which closes such sessions with 4401.
import { createHash } from 'node:crypto';
import { type Bus, BusError, type BusSubscription } from '../bus/bus.ts';
import type { Logger } from '../common/log.ts';
import type { TokenClaims, VerifyResult } from '../common/tokens.ts';
import type { Role } from '../protocol/messages.ts';
import { parseJson } from '../protocol/schema.ts';
import { accountsSubjects, encode, isApiKeyText, type Reply, type RevokedList, type VerifiedKey } from './protocol.ts';

export const VERIFIER_DEFAULTS = {
  /** A verified key is asked about again after this; revocation does not wait for it (the broadcast). */
  positiveTtlMs: 60_000,
  /** An unknown key is asked about again after this (a key made a moment ago works soon). */
  negativeTtlMs: 5_000,
  maxEntries: 10_000,
  requestTimeoutMs: 5_000,
} as const;

interface Entry {
  at: number;
  result: VerifyResult;
}

export class ApiKeyVerifier {
  /** SHA-256 of the key text -> answer: the cache holds no key. */
  private readonly cache = new Map<string, Entry>();
  private revokedKeys = new Set<string>();
  private disabledUsers = new Set<string>();
  private sub: BusSubscription | undefined;

  constructor(
    private readonly bus: Pick<Bus, 'request' | 'subscribe'>,
    private readonly log: Logger,
    private readonly options: Partial<typeof VERIFIER_DEFAULTS> = {},
    private readonly now: () => number = Date.now,
  ) {}

  /** Subscribes, and asks for the current list without waiting: a broker without accounts starts as fast. */
  start(): void {
    if (this.sub !== undefined) return;
    this.sub = this.bus.subscribe(accountsSubjects.revoked, (msg) => this.apply(msg.data));
    this.bus.request(accountsSubjects.revokedGet, encode({}), this.timeout).then(
      (msg) => this.apply(msg.data),
      // No accounts service yet: its first broadcast brings the list (it publishes when it starts).
      (err: unknown) => this.log.debug({ err }, 'accounts service not answering yet'),
    );
  }

  stop(): void {
    this.sub?.unsubscribe();
    this.sub = undefined;
  }

  static looksLikeKey(token: string | undefined): token is string {
    return token !== undefined && isApiKeyText(token);
  }

  /** The ids of the revoked keys; a new set object after every broadcast (gateway links compare by identity). */
  revokedKeyIds(): ReadonlySet<string> {
    return this.revokedKeys;
  }

  /** True when a session's token id names a revoked key or a disabled user (`key.<id>`, `user.<id>.<n>`). */
  isRevoked(jti?: string): boolean {
    if (jti === undefined) return false;
    if (jti.startsWith('key.')) return this.revokedKeys.has(jti.slice(4));
    if (jti.startsWith('user.')) {
      const end = jti.indexOf('.', 5);
      return this.disabledUsers.has(end < 0 ? jti.slice(5) : jti.slice(5, end));
    }
    return false;
  }

  async verify(text: string, allowed: readonly Role[]): Promise<VerifyResult> {
    const digest = createHash('sha256').update(text).digest('hex');
    const now = this.now();
    let entry = this.cache.get(digest);
    const ttl = entry?.result.ok
      ? (this.options.positiveTtlMs ?? VERIFIER_DEFAULTS.positiveTtlMs)
      : (this.options.negativeTtlMs ?? VERIFIER_DEFAULTS.negativeTtlMs);
    if (entry === undefined || now - entry.at > ttl) {
      entry = { at: now, result: await this.ask(text) };
      // A service that did not answer is not cached: the next request asks again.
      if (entry.result.ok || entry.result.reason !== 'malformed') this.remember(digest, entry);
    }
    const result = entry.result;
    if (!result.ok) return result;
    if (result.claims.jti !== undefined && this.isRevoked(result.claims.jti)) return { ok: false, reason: 'revoked' };
    if (result.claims.exp !== undefined && result.claims.exp * 1000 <= now) return { ok: false, reason: 'expired' };
    if (!allowed.includes(result.claims.role)) return { ok: false, reason: 'wrong-role' };
    return result;
  }

  private get timeout(): number {
    return this.options.requestTimeoutMs ?? VERIFIER_DEFAULTS.requestTimeoutMs;
  }

  private remember(digest: string, entry: Entry): void {
    if (this.cache.size >= (this.options.maxEntries ?? VERIFIER_DEFAULTS.maxEntries)) {
      this.cache.delete(this.cache.keys().next().value as string);
    }
    this.cache.set(digest, entry);
  }

  private async ask(text: string): Promise<VerifyResult> {
    try {
      const msg = await this.bus.request(accountsSubjects.verifyKey, encode({ key: text }), this.timeout);
      const parsed = parseJson(Buffer.from(msg.data).toString());
      const reply = (parsed.ok ? parsed.value : undefined) as Reply<{ key: VerifiedKey }> | undefined;
      if (reply?.ok !== true) {
        return {
          ok: false,
          reason: reply?.error === 'expired' ? 'expired' : reply?.error === 'revoked' ? 'revoked' : 'bad-signature',
        };
      }
      const k = reply.key;
      // Device keys act as the `node` role; the broker's client endpoints never accept it.
      const claims: TokenClaims = { sub: k.sub, role: k.role as Role, jti: k.jti, org: k.org };
      if (k.exp !== undefined) claims.exp = k.exp;
      return { ok: true, claims };
    } catch (err) {
      if (!(err instanceof BusError)) throw err;
      this.log.warn({ code: err.code }, 'API key not verified: the accounts service did not answer');
      return { ok: false, reason: 'malformed' };
    }
  }

  private apply(data: Uint8Array): void {
    const parsed = parseJson(Buffer.from(data).toString());
    const value = parsed.ok ? (parsed.value as Partial<RevokedList> | null) : null;
    if (value === null || !Array.isArray(value.keys) || !Array.isArray(value.users)) return;
    this.revokedKeys = new Set(value.keys.filter((k): k is string => typeof k === 'string'));
    this.disabledUsers = new Set(value.users.filter((u): u is string => typeof u === 'string'));
  }
}
