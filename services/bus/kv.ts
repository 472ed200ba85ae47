// A key-value bucket with compare-and-set, for decisions the whole cluster must make once (which gateway owns a
// node uid). One interface, two implementations: in-process (MemoryKv, below) and a NATS JetStream KV bucket
// (nats-bus.ts). Revisions only grow, so a writer that read revision r can write "only if still r".

export interface KvEntry {
  value: Uint8Array;
  /** The revision of this value; pass it to update() or delete() to write only if nobody wrote since. */
  revision: number;
}

export interface KvBucketOptions {
  /** How long one operation may take before it fails (a server that does not answer). */
  timeoutMs: number;
}

export interface KvBucket {
  /** The current value, or undefined when the key was never set or was deleted. */
  get(key: string): Promise<KvEntry | undefined>;
  /** Writes only when the key has no value (never set, or deleted); KvConflictError otherwise. New revision. */
  create(key: string, value: Uint8Array): Promise<number>;
  /** Writes only when `revision` is still the key's last one; KvConflictError otherwise. New revision. */
  update(key: string, value: Uint8Array, revision: number): Promise<number>;
  /** Deletes the value; with `revision`, only when it is still the last one (KvConflictError otherwise). */
  delete(key: string, revision?: number): Promise<void>;
}

/** A compare-and-set lost: someone wrote the key since it was read. Read again and decide again. */
export class KvConflictError extends Error {
  constructor(key: string, options?: { cause?: unknown }) {
    super(`key ${key} changed since it was read`, options);
    this.name = 'KvConflictError';
  }
}

/** The store cannot be used (JetStream not enabled, server unreachable, timeout): a retryable failure. */
export class KvUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvUnavailableError';
  }
}

/** Characters kept as they are in a key; every other UTF-8 byte becomes `=hh` (JetStream keys allow `=`). */
const PLAIN_KEY = /^[A-Za-z0-9_-]+$/;

/**
 * A key for any identifier. JetStream keys are subject tokens, so a dot, a wildcard or a non-ASCII character in
 * a device-chosen uid must not reach the key as it is: they are escaped, and the escape is one-to-one.
 */
export function kvKey(id: string): string {
  if (PLAIN_KEY.test(id)) return id;
  let out = '';
  for (const b of new TextEncoder().encode(id)) {
    const plain =
      (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || b === 0x2d;
    out += plain ? String.fromCharCode(b) : `=${b.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** In-process bucket: the same contract as JetStream's, decided synchronously inside each call. */
export class MemoryKv implements KvBucket {
  private readonly entries = new Map<string, { value?: Uint8Array; revision: number }>();
  private revision = 0;

  async get(key: string): Promise<KvEntry | undefined> {
    const e = this.entries.get(key);
    return e?.value === undefined ? undefined : { value: e.value, revision: e.revision };
  }

  async create(key: string, value: Uint8Array): Promise<number> {
    if (this.entries.get(key)?.value !== undefined) throw new KvConflictError(key);
    return this.write(key, value);
  }

  async update(key: string, value: Uint8Array, revision: number): Promise<number> {
    if (this.entries.get(key)?.revision !== revision) throw new KvConflictError(key);
    return this.write(key, value);
  }

  async delete(key: string, revision?: number): Promise<void> {
    const e = this.entries.get(key);
    if (revision !== undefined && e?.revision !== revision) throw new KvConflictError(key);
    // Forgotten outright: unlike JetStream there is no history to keep, and the map must not grow with deletes.
    this.entries.delete(key);
  }

  private write(key: string, value: Uint8Array): number {
    this.entries.set(key, { value, revision: ++this.revision });
    return this.revision;
  }
}
