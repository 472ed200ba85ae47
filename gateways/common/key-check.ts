// Device API keys at a gateway (issue 15). A gateway has no bus, so it asks the broker over its link
// (`verify-key` → `key-verified`, docs/protocol.md) and caches the answer by the key's SHA-256, never its text.
// Everything is bounded: the cache (entries, TTL), the checks in flight (a flood of wrong keys is answered
// "unavailable" at once instead of growing a queue), the key text (its exact shape is checked before hashing).
// Fail closed: with the link down, no key login is accepted, cached or not.
// The broker sends the revoked key ids (`keys-revoked`) when they change; a cached answer and an open session
// whose key is on the list are refused, the latter by the protocol's existing token sweep (withNodeKeys).
import { createHash } from 'node:crypto';
import type { Logger } from '../../services/common/log.ts';
import type { NodeKeyChecks, NodeKeyResult } from '../../services/common/token-checks.ts';
import type { BrKeyVerified } from '../../services/protocol/key-frames.ts';

export const KEY_CHECK_DEFAULTS = {
  /** A good key is asked about again after this; revocation does not wait for it (`keys-revoked`). */
  positiveTtlMs: 30_000,
  /** A refused key is asked about again after this (a key made a moment ago works soon). */
  negativeTtlMs: 5_000,
  maxEntries: 10_000,
  /** Checks waiting for the broker; beyond, a login is refused as unavailable. */
  maxPending: 256,
  /** A check the broker did not answer within this is refused as unavailable. */
  timeoutMs: 5_000,
} as const;

export type KeyCheckOptions = { [K in keyof typeof KEY_CHECK_DEFAULTS]: number };

/** `myk_<16 hex id>_<43 base64url>` (services/accounts/secrets.ts): nothing else is worth a question to the broker. */
const KEY_SHAPE = /^myk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/;

interface Pending {
  digest: string;
  resolve: (result: NodeKeyResult) => void;
  timer: NodeJS.Timeout;
}

const unavailable = (reason: string): NodeKeyResult => ({ ok: false, reason, unavailable: true });
const refused = (reason: string): NodeKeyResult => ({ ok: false, reason, unavailable: false });

export interface KeyCheckLink {
  /** Sends a frame to the broker; false when the link is down. */
  send(frame: string): boolean;
  readonly connected: boolean;
}

export class KeyCheck implements NodeKeyChecks {
  /** SHA-256 of the key text -> the broker's answer and when it came. */
  private readonly cache = new Map<string, { at: number; result: NodeKeyResult }>();
  /** Checks sent to the broker, by request id. */
  private readonly pending = new Map<string, Pending>();
  /** The check in flight per key digest: a node reconnecting in a loop asks once, not once per attempt. */
  private readonly inFlight = new Map<string, Promise<NodeKeyResult>>();
  private revoked: ReadonlySet<string> = new Set();
  private seq = 0;
  private readonly options: KeyCheckOptions;

  constructor(
    private readonly link: KeyCheckLink,
    private readonly log: Logger,
    options: Partial<KeyCheckOptions> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.options = { ...KEY_CHECK_DEFAULTS, ...options };
  }

  /** Checks in flight (a gauge, and the flood test's bound). */
  get pendingCount(): number {
    return this.pending.size;
  }

  get cacheSize(): number {
    return this.cache.size;
  }

  async verifyNodeKey(text: string): Promise<NodeKeyResult> {
    if (!KEY_SHAPE.test(text)) return refused('malformed');
    // Fail closed: a revocation sent while the link was down would not have reached this gateway.
    if (!this.link.connected) return unavailable('broker link down');
    const digest = createHash('sha256').update(text).digest('hex');
    const now = this.now();
    const cached = this.cache.get(digest);
    if (cached !== undefined) {
      const ttl = cached.result.ok ? this.options.positiveTtlMs : this.options.negativeTtlMs;
      if (now - cached.at <= ttl) return this.onUse(cached.result, now);
      this.cache.delete(digest);
    }
    let asking = this.inFlight.get(digest);
    if (asking === undefined) {
      asking = this.ask(text, digest);
      this.inFlight.set(digest, asking);
      asking.finally(() => this.inFlight.delete(digest)).catch(() => undefined);
    }
    return this.onUse(await asking, this.now());
  }

  isRevoked(jti?: string): boolean {
    return jti?.startsWith('key.') === true && this.revoked.has(jti.slice(4));
  }

  /** A `key-verified` frame from the broker. */
  answer(msg: BrKeyVerified): void {
    const pending = this.pending.get(msg.id);
    if (pending === undefined) return; // timed out, or the link dropped meanwhile
    this.pending.delete(msg.id);
    clearTimeout(pending.timer);
    let result: NodeKeyResult;
    if (msg.ok && msg.node !== undefined && msg.jti !== undefined) {
      result = { ok: true, node: msg.node, jti: msg.jti };
      if (msg.org !== undefined) result.org = msg.org;
      if (msg.exp !== undefined) result.exp = msg.exp;
    } else {
      const reason = msg.reason ?? 'unknown';
      result = reason === 'busy' || reason === 'unavailable' ? unavailable(reason) : refused(reason);
    }
    // "Nobody could say" is not an answer about the key: the next login asks again.
    if (result.ok || !result.unavailable) this.remember(pending.digest, result);
    pending.resolve(result);
  }

  /** A `keys-revoked` frame: the whole list, which replaces the previous one. */
  revokedKeys(ids: readonly string[]): void {
    this.revoked = new Set(ids);
    for (const [digest, entry] of this.cache) {
      if (entry.result.ok && this.isRevoked(entry.result.jti)) this.cache.delete(digest);
    }
  }

  /**
   * The link closed: every check in flight is refused as unavailable (fail closed), none is left waiting, and the
   * cache is dropped, since a revocation sent meanwhile was missed (the next link brings the list again).
   */
  linkDown(): void {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.resolve(unavailable('broker link down'));
      this.pending.delete(id);
    }
    this.cache.clear();
  }

  stop(): void {
    this.linkDown();
  }

  private ask(text: string, digest: string): Promise<NodeKeyResult> {
    if (this.pending.size >= this.options.maxPending) return Promise.resolve(unavailable('too many key checks'));
    const id = `k${++this.seq}`;
    return new Promise<NodeKeyResult>((resolve) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          this.log.warn({ id }, 'the broker did not answer a device key check');
          resolve(unavailable('no answer from the broker'));
        }
      }, this.options.timeoutMs);
      timer.unref();
      this.pending.set(id, { digest, resolve, timer });
      // The key goes in the frame (the broker must verify it) but never in a log line.
      if (!this.link.send(JSON.stringify({ type: 'verify-key', id, key: text }))) {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(unavailable('broker link down'));
      }
    });
  }

  /** Checked at every use, cached or fresh: the revocation list and the key's expiry. */
  private onUse(result: NodeKeyResult, now: number): NodeKeyResult {
    if (!result.ok) return result;
    if (this.isRevoked(result.jti)) return refused('revoked');
    if (result.exp !== undefined && result.exp * 1000 <= now) return refused('expired');
    return result;
  }

  private remember(digest: string, result: NodeKeyResult): void {
    if (this.cache.size >= this.options.maxEntries) {
      // Oldest first (a Map iterates in insertion order).
      this.cache.delete(this.cache.keys().next().value as string);
    }
    this.cache.set(digest, { at: this.now(), result });
  }
}
