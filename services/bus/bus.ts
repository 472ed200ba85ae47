// The message bus: one interface, two implementations (in-process and NATS) with NATS subject semantics.
// Subjects are dot-separated tokens; `*` matches one token, `>` matches one or more trailing tokens.
// Subject names used by Mycelium are in ./subjects.ts.
import type { KvBucket, KvBucketOptions } from './kv.ts';

export interface BusMsg {
  subject: string;
  data: Uint8Array;
  /** Reply subject for request/reply; answer with `bus.publish(msg.reply, data)`. */
  reply?: string;
}

export type BusHandler = (msg: BusMsg) => void;

export interface BusSubscription {
  unsubscribe(): void;
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group only. */
  queue?: string;
}

export class BusError extends Error {
  readonly code: 'no-responders' | 'timeout' | 'closed';
  constructor(code: 'no-responders' | 'timeout' | 'closed', message: string) {
    super(message);
    this.code = code;
    this.name = 'BusError';
  }
}

export interface Bus {
  readonly kind: 'memory' | 'nats';
  start(): Promise<void>;
  /** Drains pending messages, then closes. Safe to call twice. */
  stop(): Promise<void>;
  publish(subject: string, data: Uint8Array, reply?: string): void;
  subscribe(subject: string, handler: BusHandler, options?: SubscribeOptions): BusSubscription;
  /** One answer, or a BusError (`no-responders` at once when nobody listens, `timeout` otherwise). */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<BusMsg>;
  /** Every answer that arrives within `windowMs` (used to gather state from peer brokers). */
  requestMany(subject: string, data: Uint8Array, windowMs: number): Promise<BusMsg[]>;
  /** Resolves once everything published so far has reached the server (a no-op in-process). */
  flush(): Promise<void>;
  /**
   * A key-value bucket with compare-and-set shared by every user of this bus (created when missing). In-process
   * a map; on NATS a JetStream KV bucket, so it fails with KvUnavailableError when the server has no JetStream.
   */
  keyValue(bucket: string, options: KvBucketOptions): Promise<KvBucket>;
}

/** True when `subject` matches `pattern` under NATS wildcard rules. */
export function subjectMatches(pattern: string, subject: string): boolean {
  if (pattern === subject) return true;
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

/** Subjects may not be empty, contain whitespace or empty tokens; wildcards only as whole tokens. */
export function isValidSubject(subject: string, allowWildcards: boolean): boolean {
  if (subject.length === 0 || /\s/.test(subject)) return false;
  const tokens = subject.split('.');
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.length === 0) return false;
    if (t === '>' && (!allowWildcards || i !== tokens.length - 1)) return false;
    if (t === '*' && !allowWildcards) return false;
    if (t !== '*' && t !== '>' && (t.includes('*') || t.includes('>'))) return false;
  }
  return true;
}
