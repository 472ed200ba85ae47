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

/** One message of a durable stream, with what makes storing it idempotent. */
export interface Delivery {
  subject: string;
  data: Uint8Array;
  /**
   * Unique per message and the same on every redelivery: `<stream>:<stream sequence>` on NATS,
   * `<consumer start id>:<counter>` in-process.
   */
  key: string;
  /** When the message entered the stream (epoch ms), the same on every redelivery. */
  at: number;
}

/** Handles a batch; resolving acknowledges it, rejecting has it delivered again (NATS) or dropped and counted. */
export type BatchHandler = (batch: Delivery[]) => Promise<void>;

export interface ConsumeOptions {
  /** The stream's name (NATS: a JetStream stream, created or updated to capture `subjects`). */
  stream: string;
  subjects: string[];
  /** The consumer's name: every consumer of the same name shares the messages (several workers, one copy each). */
  durable: string;
  /** Most messages handed to the handler at once. */
  batch: number;
  /**
   * Most messages waiting for the handler. In-process, later ones are dropped and counted; on NATS it is the
   * consumer's max_ack_pending, so the server holds the rest.
   */
  maxPending: number;
  /** NATS: how long the stream keeps a message (ms), consumed or not. */
  maxAgeMs: number;
  /** NATS: a delivered message not acknowledged within this is delivered again (a crashed worker's batch). */
  ackWaitMs: number;
  /** Pause after a failed batch before the next attempt (the store is down: do not spin). */
  retryMs: number;
}

export interface StreamConsumer {
  /** Messages dropped (in-process: buffer full, or the handler failed); always 0 on NATS, which redelivers. */
  readonly dropped: number;
  /** Stops taking messages; a batch in the handler finishes first. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Durable consumption: messages published on `subjects` reach a consumer even while it is down (NATS), each
 * once per consumer name. Services that must not miss an event (history) use it; the broker does not.
 */
export interface DurableStreams {
  consume(options: ConsumeOptions, handler: BatchHandler): Promise<StreamConsumer>;
}

/** Feeds a batch handler one batch at a time from a queue that others push to (both buses use it). */
export class BatchPump<T> {
  private readonly queue: T[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly batch: number,
    private readonly handle: (items: T[]) => Promise<void>,
  ) {}

  get length(): number {
    return this.queue.length;
  }

  push(item: T): void {
    if (this.stopped) return;
    this.queue.push(item);
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  private async run(): Promise<void> {
    // Started from push(): yield once, so a burst published in one turn becomes one batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.queue.length > 0 && !this.stopped) await this.handle(this.queue.splice(0, this.batch));
    this.running = undefined;
    if (this.queue.length > 0 && !this.stopped) this.running = this.run();
  }
}
