// Bounded per-key limits for input from outside: a token bucket per key (new nodes per source address, frames
// per client) and a count of open connections per address. Both hold at most `maxKeys` keys, so a flood of
// spoofed source addresses cannot grow them without end: when full, the oldest key is forgotten (Map order).

export interface RateOptions {
  /** Tokens added per second. */
  perSecond: number;
  /** Bucket size: the burst allowed after a quiet period. */
  burst: number;
  /** Most keys remembered at once. */
  maxKeys?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export const DEFAULT_MAX_KEYS = 65_536;

/** A token bucket per key: take(key) is true while the key is within its rate. */
export class KeyedRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxKeys: number;

  constructor(
    private readonly options: RateOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token for `key`; false when its bucket is empty. */
  take(key: string): boolean {
    const now = this.now();
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: this.options.burst, at: now };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.options.burst, b.tokens + ((now - b.at) / 1000) * this.options.perSecond);
      b.at = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

/** Open connections per address, with a cap: acquire() is false when the address already holds `max`. */
export class ConnectionCounter {
  private readonly open = new Map<string, number>();

  constructor(readonly max: number) {}

  acquire(address: string): boolean {
    const n = this.open.get(address) ?? 0;
    if (n >= this.max) return false;
    this.open.set(address, n + 1);
    return true;
  }

  release(address: string): void {
    const n = this.open.get(address);
    if (n === undefined) return;
    if (n <= 1) this.open.delete(address);
    else this.open.set(address, n - 1);
  }

  count(address: string): number {
    return this.open.get(address) ?? 0;
  }
}
