// In-process bus, the embedded default: same subject semantics as NATS, no network.
// Delivery is synchronous and in publish order; a handler that throws does not stop delivery to others.
import { randomUUID } from 'node:crypto';
import {
  BatchPump,
  type BatchHandler,
  type Bus,
  BusError,
  type ConsumeOptions,
  type Delivery,
  type DurableStreams,
  type StreamConsumer,
  type BusHandler,
  type BusMsg,
  type BusSubscription,
  isValidSubject,
  type SubscribeOptions,
  subjectMatches,
} from './bus.ts';
import { type KvBucket, MemoryKv } from './kv.ts';

/** Bounds the route cache when a bus user publishes on very many distinct subjects. */
const MAX_CACHED_ROUTES = 10_000;

interface Sub {
  pattern: string;
  handler: BusHandler;
  queue?: string;
}

export class MemoryBus implements Bus, DurableStreams {
  readonly kind = 'memory' as const;
  private subs: Sub[] = [];
  /** subject -> matching subscriptions, rebuilt lazily after any (un)subscribe. */
  private routes = new Map<string, Sub[]>();
  private queueCursor = new Map<string, number>();
  private closed = false;
  private inboxPrefix = `_INBOX.${randomUUID().replace(/-/g, '')}`;
  private inboxSeq = 0;
  /**
   * The reply inboxes of this bus's requests, outside `subs`: a request would otherwise subscribe and unsubscribe
   * an inbox each time, and each clears the route cache (the rules service's requests spent more time there than
   * in the rest of their path). Subscribers whose pattern can match an inbox still get the replies, as on NATS.
   */
  private readonly inboxes = new Map<string, Sub>();
  /** Subscriptions whose pattern can match `_INBOX.…` (`>`, `*.…`, `_INBOX.…`): replies are routed to them too. */
  private inboxWatchers = 0;
  private readonly buckets = new Map<string, MemoryKv>();

  /** `onError` sees exceptions thrown by handlers (default: printed); delivery to others goes on. */
  constructor(
    private readonly onError: (err: unknown, subject: string) => void = (err, subject) =>
      console.error(`bus handler for ${subject} failed`, err),
  ) {}

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    this.closed = true;
    this.subs = [];
    this.routes.clear();
    this.inboxes.clear();
  }

  async flush(): Promise<void> {}

  async keyValue(bucket: string): Promise<KvBucket> {
    let kv = this.buckets.get(bucket);
    if (kv === undefined) {
      kv = new MemoryKv();
      this.buckets.set(bucket, kv);
    }
    return kv;
  }

  publish(subject: string, data: Uint8Array, reply?: string): void {
    if (this.closed) return;
    if (this.inboxes.size > 0) {
      const inbox = this.inboxes.get(subject);
      if (inbox !== undefined) {
        this.deliver(inbox, { subject, data, reply });
        if (this.inboxWatchers === 0) return;
      }
    }
    // A cached route means the subject was checked before: the per-message path skips the check.
    const targets = this.routes.get(subject) ?? this.checkedRoute(subject);
    if (targets.length === 0) return;
    const msg: BusMsg = { subject, data, reply };
    let queues: Set<string> | undefined;
    for (const sub of targets) {
      if (sub.queue === undefined) {
        this.deliver(sub, msg);
      } else if (!queues?.has(sub.queue)) {
        if (queues === undefined) queues = new Set();
        queues.add(sub.queue);
        this.deliver(this.pickQueueMember(sub.queue, targets), msg);
      }
    }
  }

  subscribe(subject: string, handler: BusHandler, options: SubscribeOptions = {}): BusSubscription {
    if (!isValidSubject(subject, true)) throw new Error(`invalid subject "${subject}"`);
    const sub: Sub = { pattern: subject, handler, queue: options.queue };
    const watchesInboxes = subjectMatches(subject, `${this.inboxPrefix}.1`);
    this.subs.push(sub);
    this.routes.clear();
    if (watchesInboxes) this.inboxWatchers++;
    return {
      unsubscribe: () => {
        const i = this.subs.indexOf(sub);
        if (i >= 0) {
          this.subs.splice(i, 1);
          this.routes.clear();
          if (watchesInboxes) this.inboxWatchers--;
        }
      },
    };
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<BusMsg> {
    return new Promise((resolve, reject) => {
      // Checked before routing: an invalid subject has no route and would otherwise pass as "no responders".
      if (!isValidSubject(subject, false)) return reject(new Error(`invalid subject "${subject}"`));
      if (this.closed) return reject(new BusError('closed', 'bus is closed'));
      if (this.route(subject).length === 0) return reject(new BusError('no-responders', `no responders on ${subject}`));
      const inbox = this.newInbox();
      const timer = setTimeout(() => {
        this.inboxes.delete(inbox);
        reject(new BusError('timeout', `request on ${subject} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.inboxes.set(inbox, {
        pattern: inbox,
        handler: (msg) => {
          clearTimeout(timer);
          this.inboxes.delete(inbox);
          resolve(msg);
        },
      });
      this.publish(subject, data, inbox);
    });
  }

  requestMany(subject: string, data: Uint8Array, windowMs: number): Promise<BusMsg[]> {
    return new Promise((resolve, reject) => {
      if (!isValidSubject(subject, false)) return reject(new Error(`invalid subject "${subject}"`));
      const replies: BusMsg[] = [];
      if (this.closed || this.route(subject).length === 0) return resolve(replies);
      const inbox = this.newInbox();
      this.inboxes.set(inbox, { pattern: inbox, handler: (msg) => replies.push(msg) });
      setTimeout(() => {
        this.inboxes.delete(inbox);
        resolve(replies);
      }, windowMs).unref();
      this.publish(subject, data, inbox);
    });
  }

  /**
   * In-process "durable" consumption: nothing survives the process, so this is a bounded queue in front of the
   * handler. Beyond `maxPending` waiting messages, new ones are dropped, and a batch the handler fails is dropped
   * too; both are counted in `dropped`. Consumers sharing a durable name share the messages (a queue group).
   */
  async consume(options: ConsumeOptions, handler: BatchHandler): Promise<StreamConsumer> {
    const startId = randomUUID().slice(0, 8);
    let counter = 0;
    let dropped = 0;
    const pump = new BatchPump<Delivery>(options.batch, async (batch) => {
      try {
        await handler(batch);
      } catch {
        // Nothing survives in-process: the batch is lost, counted; the handler's owner reports why.
        dropped += batch.length;
      }
    });
    const subs = options.subjects.map((subject) =>
      this.subscribe(
        subject,
        (msg) => {
          if (pump.length >= options.maxPending) {
            dropped++;
            return;
          }
          pump.push({ subject: msg.subject, data: msg.data, key: `${startId}:${++counter}`, at: Date.now() });
        },
        { queue: options.durable },
      ),
    );
    let stopping: Promise<void> | undefined;
    return {
      get dropped() {
        return dropped;
      },
      stop() {
        stopping ??= (async () => {
          for (const sub of subs) sub.unsubscribe();
          await pump.stop();
        })();
        return stopping;
      },
    };
  }

  private newInbox(): string {
    return `${this.inboxPrefix}.${++this.inboxSeq}`;
  }

  private checkedRoute(subject: string): Sub[] {
    if (!isValidSubject(subject, false)) throw new Error(`invalid subject "${subject}"`);
    return this.route(subject);
  }

  private route(subject: string): Sub[] {
    let targets = this.routes.get(subject);
    if (targets === undefined) {
      targets = this.subs.filter((s) => subjectMatches(s.pattern, subject));
      // Inboxes are one-shot; caching them would only grow the map.
      if (!subject.startsWith('_INBOX.')) {
        if (this.routes.size >= MAX_CACHED_ROUTES) this.routes.clear();
        this.routes.set(subject, targets);
      }
    }
    return targets;
  }

  private pickQueueMember(queue: string, targets: Sub[]): Sub {
    const members = targets.filter((s) => s.queue === queue);
    const n = (this.queueCursor.get(queue) ?? 0) % members.length;
    this.queueCursor.set(queue, n + 1);
    return members[n];
  }

  private deliver(sub: Sub, msg: BusMsg): void {
    try {
      sub.handler(msg);
    } catch (err) {
      // A faulty subscriber must not stop delivery to the others.
      this.onError(err, msg.subject);
    }
  }
}
