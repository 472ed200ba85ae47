// NATS bus: the MemoryBus contract over one client connection that reconnects forever.
// Subscriptions use callbacks rather than async iterators: no promise per message on the hot path.
import type { JsMsg, KV, Msg, NatsConnection, NatsError, Subscription } from 'nats';
import { cjsExports } from '../common/cjs.ts';

/**
 * The nats client library, loaded when the first NatsBus connects: a process on the in-process bus never pays its
 * ~120 ms of module loading at start-up. Everything below that needs it runs after connect().
 */
let nats: typeof import('nats') | undefined;
const lib = (): typeof import('nats') => {
  if (nats === undefined) throw new Error('NatsBus used before start()');
  return nats;
};
import {
  BatchPump,
  type BatchHandler,
  type Bus,
  BusError,
  type ConsumeOptions,
  type DurableStreams,
  type StreamConsumer,
  type BusHandler,
  type BusMsg,
  type BusSubscription,
  isValidSubject,
  type SubscribeOptions,
} from './bus.ts';
import { type KvBucket, type KvBucketOptions, KvConflictError, type KvEntry, KvUnavailableError } from './kv.ts';

/** Pause between reconnect attempts (nats.js adds up to 100 ms of jitter). */
export const DEFAULT_RECONNECT_TIME_WAIT_MS = 2_000;
/** stop() waits this long for drain, which cannot finish while the server is unreachable; then it closes. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 5_000;

export interface NatsBusOptions {
  /** One URL or several; a comma-separated string is not split here (see createBus). */
  servers: string | string[];
  /** Connection name shown by the server's monitoring endpoints. */
  name?: string;
  /**
   * Sees exceptions thrown by handlers and subscription errors, with their subject; delivery goes on.
   * A connection that closes without stop() (for example after an authorization error) is reported with subject ''.
   */
  onError?: (err: unknown, subject: string) => void;
  reconnectTimeWaitMs?: number;
  drainTimeoutMs?: number;
}

/** Handed out once the connection is draining or closed, like MemoryBus accepting subscriptions after stop(). */
const INERT_SUBSCRIPTION: BusSubscription = { unsubscribe() {} };

export class NatsBus implements Bus, DurableStreams {
  readonly kind = 'nats' as const;
  private readonly onError: (err: unknown, subject: string) => void;
  private nc: NatsConnection | undefined;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly options: NatsBusOptions) {
    this.onError =
      options.onError ??
      ((err, subject) => console.error(subject ? `bus handler for ${subject} failed` : 'NATS connection closed', err));
  }

  start(): Promise<void> {
    if (this.stopping !== undefined) return Promise.reject(new Error('NatsBus cannot be started again after stop()'));
    this.starting ??= this.connect();
    return this.starting;
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  publish(subject: string, data: Uint8Array, reply?: string): void {
    // Also guards the wire protocol: a space in a subject would be read by the server as a reply subject.
    if (!isValidSubject(subject, false)) throw new Error(`invalid subject "${subject}"`);
    const nc = this.connection();
    try {
      nc.publish(subject, data, reply === undefined ? undefined : { reply });
    } catch (err) {
      // Same as MemoryBus: publishing on a stopped bus is a no-op, so shutdown races do not crash callers.
      if (!isClosedError(err)) throw err;
    }
  }

  subscribe(subject: string, handler: BusHandler, options: SubscribeOptions = {}): BusSubscription {
    if (!isValidSubject(subject, true)) throw new Error(`invalid subject "${subject}"`);
    const nc = this.connection();
    const onError = this.onError;
    let sub: Subscription;
    try {
      sub = nc.subscribe(subject, {
        queue: options.queue,
        callback: (err, msg) => {
          if (err !== null) {
            onError(err, subject);
            return;
          }
          try {
            handler(toBusMsg(msg));
          } catch (handlerErr) {
            onError(handlerErr, msg.subject);
          }
        },
      });
    } catch (err) {
      if (isClosedError(err)) return INERT_SUBSCRIPTION;
      throw err;
    }
    return { unsubscribe: () => sub.unsubscribe() };
  }

  async request(subject: string, data: Uint8Array, timeoutMs: number): Promise<BusMsg> {
    if (!isValidSubject(subject, false)) throw new Error(`invalid subject "${subject}"`);
    const nc = this.connection();
    try {
      return toBusMsg(await nc.request(subject, data, { timeout: timeoutMs }));
    } catch (err) {
      throw toBusError(err, subject, timeoutMs);
    }
  }

  async requestMany(subject: string, data: Uint8Array, windowMs: number): Promise<BusMsg[]> {
    if (!isValidSubject(subject, false)) throw new Error(`invalid subject "${subject}"`);
    const nc = this.connection();
    const replies: BusMsg[] = [];
    let endWindow!: () => void;
    const window = new Promise<void>((resolve) => {
      endWindow = resolve;
    });
    const timer = setTimeout(endWindow, windowMs);
    // A pending gather must not keep a process alive that is otherwise ready to exit.
    timer.unref();
    let sub: Subscription;
    try {
      sub = nc.subscribe(lib().createInbox(), {
        callback: (err, msg) => {
          if (err !== null) {
            this.onError(err, subject);
          } else if (msg.data.length === 0 && msg.headers?.code === 503) {
            // The server's "no responders" status: nobody will answer, so the window can end now.
            endWindow();
          } else {
            replies.push(toBusMsg(msg));
          }
        },
      });
      nc.publish(subject, data, { reply: sub.getSubject() });
    } catch (err) {
      clearTimeout(timer);
      if (isClosedError(err)) return replies;
      throw err;
    }
    await window;
    clearTimeout(timer);
    sub.unsubscribe();
    return replies;
  }

  async flush(): Promise<void> {
    const nc = this.connection();
    try {
      await nc.flush();
    } catch (err) {
      if (!isClosedError(err)) throw err;
    }
  }

  async keyValue(bucket: string, options: KvBucketOptions): Promise<KvBucket> {
    const nc = this.connection();
    try {
      // history 1: only the last value of a key matters; file storage (the default) keeps it across restarts.
      const kv = await nc.jetstream({ timeout: options.timeoutMs }).views.kv(bucket, {
        history: 1,
        timeout: options.timeoutMs,
      });
      return new NatsKv(kv);
    } catch (err) {
      throw toKvError(err, `JetStream key-value bucket ${bucket}`);
    }
  }

  /**
   * A JetStream stream capturing `subjects` (created, or updated to them) and a durable pull consumer on it with
   * explicit acks. A batch is acknowledged once the handler resolved; a failed batch is nak'd with `retryMs` of
   * delay, so the server delivers it again (ingestion pauses while the store is down and resumes after). What a
   * crashed worker held unacknowledged is delivered again after `ackWaitMs`. `maxPending` (max_ack_pending)
   * bounds what the server hands out before acks, so a slow handler never holds more than that in memory.
   */
  async consume(options: ConsumeOptions, handler: BatchHandler): Promise<StreamConsumer> {
    const nc = this.connection();
    const { AckPolicy, DeliverPolicy, StorageType, nanos } = lib();
    let jsm: Awaited<ReturnType<NatsConnection['jetstreamManager']>>;
    try {
      jsm = await nc.jetstreamManager();
    } catch (err) {
      throw new Error(
        `durable consumer ${options.durable}: JetStream is not enabled on the NATS server (start it with -js): ${(err as Error).message}`,
        { cause: err },
      );
    }
    const streamConfig = { subjects: options.subjects, max_age: nanos(options.maxAgeMs) };
    const exists = await jsm.streams.info(options.stream).then(
      () => true,
      () => false,
    );
    if (exists) await jsm.streams.update(options.stream, streamConfig);
    else await jsm.streams.add({ name: options.stream, storage: StorageType.File, ...streamConfig });
    const consumerConfig = {
      ack_wait: nanos(options.ackWaitMs),
      max_ack_pending: options.maxPending,
    };
    const known = await jsm.consumers.info(options.stream, options.durable).then(
      () => true,
      () => false,
    );
    if (known) await jsm.consumers.update(options.stream, options.durable, consumerConfig);
    else {
      await jsm.consumers.add(options.stream, {
        durable_name: options.durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ...consumerConfig,
      });
    }
    const consumer = await nc.jetstream().consumers.get(options.stream, options.durable);
    const pump = new BatchPump<JsMsg>(options.batch, async (msgs) => {
      try {
        await handler(
          msgs.map((m) => ({
            subject: m.subject,
            data: m.data,
            key: `${options.stream}:${m.seq}`,
            at: Math.floor(m.info.timestampNanos / 1e6),
          })),
        );
        for (const m of msgs) m.ack();
      } catch {
        // The handler's owner reports its own failure; here the batch only goes back to the server.
        for (const m of msgs) m.nak(options.retryMs);
        await new Promise((resolve) => setTimeout(resolve, options.retryMs));
      }
    });
    const messages = await consumer.consume({
      max_messages: Math.min(options.batch * 2, options.maxPending),
      callback: (m) => pump.push(m),
    });
    let stopping: Promise<void> | undefined;
    return {
      dropped: 0,
      stop() {
        stopping ??= (async () => {
          await messages.close().catch(() => undefined);
          await pump.stop();
        })();
        return stopping;
      },
    };
  }

  private async connect(): Promise<void> {
    const { servers, name } = this.options;
    try {
      nats ??= cjsExports(await import('nats'), 'connect');
      this.nc = await nats.connect({
        servers,
        name,
        maxReconnectAttempts: -1,
        reconnectTimeWait: this.options.reconnectTimeWaitMs ?? DEFAULT_RECONNECT_TIME_WAIT_MS,
        // A broker that cannot reach NATS at boot should fail loudly, not wait silently.
        waitOnFirstConnect: false,
      });
    } catch (err) {
      this.starting = undefined;
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`cannot connect to NATS at ${String(servers)}: ${reason}`, { cause: err });
    }
    this.nc
      .closed()
      .then((err) => {
        if (err !== undefined && this.stopping === undefined) this.onError(err, '');
      })
      .catch((err) => this.onError(err, ''));
  }

  private async shutdown(): Promise<void> {
    await this.starting?.catch(() => {});
    const nc = this.nc;
    if (nc === undefined || nc.isClosed()) return;
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS);
    });
    try {
      await Promise.race([nc.drain(), limit]);
    } catch (err) {
      if (!isClosedError(err)) throw err;
    } finally {
      clearTimeout(timer);
    }
    // drain() swallows a flush lost to a disconnect and then leaves the connection open, so close regardless.
    if (!nc.isClosed()) await nc.close();
  }

  private connection(): NatsConnection {
    if (this.nc === undefined) throw new Error('NatsBus used before start()');
    return this.nc;
  }
}

/** A JetStream KV bucket behind the KvBucket contract: conflicts and outages become typed errors. */
class NatsKv implements KvBucket {
  constructor(private readonly kv: KV) {}

  async get(key: string): Promise<KvEntry | undefined> {
    try {
      const e = await this.kv.get(key);
      // A deleted or purged key reads as a marker entry: for the contract it has no value.
      return e === null || e.operation !== 'PUT' ? undefined : { value: e.value, revision: e.revision };
    } catch (err) {
      throw toKvError(err, key);
    }
  }

  async create(key: string, value: Uint8Array): Promise<number> {
    try {
      return await this.kv.create(key, value);
    } catch (err) {
      throw toKvError(err, key);
    }
  }

  async update(key: string, value: Uint8Array, revision: number): Promise<number> {
    try {
      return await this.kv.update(key, value, revision);
    } catch (err) {
      throw toKvError(err, key);
    }
  }

  async delete(key: string, revision?: number): Promise<void> {
    try {
      await this.kv.delete(key, revision === undefined ? undefined : { previousSeq: revision });
    } catch (err) {
      throw toKvError(err, key);
    }
  }
}

/** JetStream's "wrong last sequence": the compare-and-set lost. */
const JS_WRONG_LAST_SEQUENCE = 10071;

function toKvError(err: unknown, what: string): Error {
  const apiCode = (err as Partial<NatsError> | undefined)?.api_error?.err_code;
  if (apiCode === JS_WRONG_LAST_SEQUENCE) return new KvConflictError(what, { cause: err });
  const code = natsCode(err);
  const reason = err instanceof Error ? err.message : String(err);
  if (code === lib().ErrorCode.JetStreamNotEnabled || code === lib().ErrorCode.NoResponders) {
    // Nobody answers on the JetStream API or the bucket's subjects: JetStream is off, or the bucket is gone.
    return new KvUnavailableError(
      `${what}: JetStream is not enabled on the NATS server, or the bucket is gone (${reason})`,
      {
        cause: err,
      },
    );
  }
  return new KvUnavailableError(`${what}: ${reason}`, { cause: err });
}

function toBusMsg(msg: Msg): BusMsg {
  // nats.js reports a missing reply as ''; BusMsg says undefined, as MemoryBus does.
  return { subject: msg.subject, data: msg.data, reply: msg.reply || undefined };
}

function natsCode(err: unknown): unknown {
  return err instanceof Error && 'code' in err ? err.code : undefined;
}

function isClosedError(err: unknown): boolean {
  const code = natsCode(err);
  return code === lib().ErrorCode.ConnectionClosed || code === lib().ErrorCode.ConnectionDraining;
}

function toBusError(err: unknown, subject: string, timeoutMs: number): unknown {
  let busErr: BusError;
  const { ErrorCode } = lib();
  switch (natsCode(err)) {
    case ErrorCode.NoResponders:
      busErr = new BusError('no-responders', `no responders on ${subject}`);
      break;
    case ErrorCode.Timeout:
      busErr = new BusError('timeout', `request on ${subject} timed out after ${timeoutMs} ms`);
      break;
    case ErrorCode.ConnectionClosed:
    case ErrorCode.ConnectionDraining:
      busErr = new BusError('closed', 'bus is closed');
      break;
    default:
      return err;
  }
  busErr.cause = err;
  return busErr;
}
