// The history service: takes node events and write results off the bus (a durable consumer: JetStream on NATS,
// a bounded queue in-process), stores them in batches, prunes in the background, and answers queries on
// `myc.history.query` in the queue group `history`, so several workers share both the ingestion and the queries.
import type { Bus, BusMsg, BusSubscription, Delivery, DurableStreams, StreamConsumer } from '../bus/index.ts';
import { subjects } from '../bus/subjects.ts';
import type { Logger } from '../common/log.ts';
import { type Histogram, LATENCY_BUCKETS_S, Metrics } from '../common/metrics.ts';
import type { Json } from '../protocol/messages.ts';
import { parseJson } from '../protocol/schema.ts';
import {
  checkRange,
  checkSeries,
  checkSettings,
  type ErrorReply,
  ErrorCodes,
  type EventsReply,
  type EventsRequest,
  MAX_EVENTS,
  PAGE_BYTES,
  PAGE_ROWS,
  type PointsRequest,
  type SettingsReply,
} from './protocol.ts';
import type { EventRow, HistoryStore, ResourceSettings, ValueRow } from './store.ts';

/** The JetStream stream that captures node events and write results for the history. */
export const HISTORY_STREAM = 'MYC_HISTORY';
/** The queue group of the history workers' query subscription. */
export const HISTORY_QUEUE = 'history';
/** Write results arrive on `myc.writes.<broker>`. */
const WRITES_PREFIX = subjects.allWrites.slice(0, -1);
/** Series whose settings and last stored time are cached; beyond it the caches start over. */
const MAX_CACHED_SERIES = 100_000;

export interface HistoryServiceConfig {
  /** Values and events older than this are pruned (per-resource `retentionMs` overrides it for values). */
  retentionMs: number;
  /** The durable consumer's name: workers sharing it share the stream. */
  durable: string;
  batch: number;
  maxPending: number;
  ackWaitMs: number;
  retryMs: number;
  streamMaxAgeMs: number;
  pruneIntervalMs: number;
  pruneBudget: number;
}

export interface HistoryServiceDeps {
  bus: Bus & DurableStreams;
  store: HistoryStore;
  log: Logger;
}

/** What the service did, for logs, tests and metrics. */
export interface HistoryCounts {
  values: number;
  events: number;
  /** Values not stored because they came sooner than their resource's minInterval. */
  skipped: number;
  /** Messages on the stream that were not a node event or write result. */
  bad: number;
  /** Batches the store refused (disk full, database gone). */
  failedBatches: number;
  pruned: number;
}

const seriesKey = (uid: string, resource: string) => `${uid}\u0000${resource}`;

function errorReply(status: number, error: string, message: string): ErrorReply {
  return { error, message, status };
}

export class HistoryService {
  readonly counts: HistoryCounts = { values: 0, events: 0, skipped: 0, bad: 0, failedBatches: 0, pruned: 0 };
  /** The service's Prometheus series (served by `mycelium history --http-port`). */
  readonly metrics = new Metrics('mycelium_history_');
  /** Store transactions: one batch off the stream each. */
  private readonly batchSeconds: Histogram;
  /** Query requests, from arrival to the reply handed to the bus. */
  private readonly querySeconds: Histogram;
  /** The last batch the store was given failed (disk full, database gone): /healthz says so until one succeeds. */
  private storeFailing = false;
  private consumer: StreamConsumer | undefined;
  private subs: BusSubscription[] = [];
  private pruneTimer: NodeJS.Timeout | undefined;
  private pruning = false;
  private readonly settings = new Map<string, ResourceSettings>();
  private readonly lastStored = new Map<string, number>();
  private started = false;
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly config: HistoryServiceConfig,
    private readonly deps: HistoryServiceDeps,
  ) {
    const m = this.metrics;
    const c = this.counts;
    m.counterFrom('values_stored_total', 'resource values stored', () => c.values);
    m.counterFrom('events_stored_total', 'node events and write results stored', () => c.events);
    m.counterFrom(
      'values_skipped_total',
      "values not stored: sooner than their resource's minInterval",
      () => c.skipped,
    );
    m.counterFrom(
      'bad_messages_total',
      'messages on the stream that were not a node event or write result',
      () => c.bad,
    );
    m.counterFrom(
      'failed_batches_total',
      'batches the store refused (retried on NATS, dropped in-process)',
      () => c.failedBatches,
    );
    m.counterFrom('pruned_total', 'values and events deleted by retention and maxHistory', () => c.pruned);
    m.counterFrom(
      'dropped_total',
      'messages dropped in-process (buffer full or store failing); 0 on NATS',
      () => this.dropped,
    );
    this.batchSeconds = m.histogram('batch_duration_seconds', 'one batch stored (one transaction)', LATENCY_BUCKETS_S);
    this.querySeconds = m.histogram(
      'query_duration_seconds',
      'one query answered, page or settings',
      LATENCY_BUCKETS_S,
    );
  }

  /** Whether the service can do its work: started, and the store took the last batch. */
  health(): { status: 'ok' | 'down'; down: string[]; store: string; bus: string } {
    const down: string[] = [];
    if (!this.started || this.stopping !== undefined) down.push('service not running');
    if (this.storeFailing) down.push(`${this.deps.store.kind} store refusing batches`);
    return {
      status: down.length === 0 ? 'ok' : 'down',
      down,
      store: this.deps.store.kind,
      bus: this.deps.bus.kind,
    };
  }

  /** Messages the in-process consumer dropped (full buffer, failed store); always 0 on NATS. */
  get dropped(): number {
    return this.consumer?.dropped ?? 0;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const { bus, store, log } = this.deps;
    await store.open();
    this.subs.push(
      bus.subscribe(subjects.historyQuery, (msg) => this.onRequest(msg), { queue: HISTORY_QUEUE }),
      bus.subscribe(subjects.historySettings, (msg) => this.onSettingsChanged(msg)),
    );
    const c = this.config;
    this.consumer = await bus.consume(
      {
        stream: HISTORY_STREAM,
        subjects: [subjects.allEvents, subjects.allWrites],
        durable: c.durable,
        batch: c.batch,
        maxPending: c.maxPending,
        maxAgeMs: c.streamMaxAgeMs,
        ackWaitMs: c.ackWaitMs,
        retryMs: c.retryMs,
      },
      (batch) => this.ingest(batch),
    );
    this.pruneTimer = setInterval(() => this.pruneInBackground(), c.pruneIntervalMs);
    this.pruneTimer.unref();
    log.info({ store: store.kind, bus: bus.kind, durable: c.durable }, 'history service started');
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (!this.started) return;
    clearInterval(this.pruneTimer);
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    await this.consumer?.stop();
    await this.deps.store.close();
    this.deps.log.info({ ...this.counts, dropped: this.dropped }, 'history service stopped');
  }

  // ---------------------------------------------------------------------------------------------
  // Ingestion

  /** One batch off the stream, one store transaction. Rejects when the store fails, so the bus retries or counts. */
  private async ingest(batch: Delivery[]): Promise<void> {
    const values: ValueRow[] = [];
    const events: EventRow[] = [];
    for (const d of batch) {
      const json = parseJson(Buffer.from(d.data.buffer, d.data.byteOffset, d.data.length).toString());
      const msg = json.ok ? json.value : undefined;
      if (
        typeof msg !== 'object' ||
        msg === null ||
        Array.isArray(msg) ||
        !this.collect(d, msg as { [key: string]: Json }, values, events)
      ) {
        this.counts.bad++;
      }
    }
    let kept: { rows: ValueRow[]; last: Map<string, number> } = { rows: [], last: new Map() };
    const started = performance.now();
    try {
      kept = await this.applyMinInterval(values);
      await this.deps.store.insert(kept.rows, events);
      this.storeFailing = false;
      this.batchSeconds.observe((performance.now() - started) / 1000);
    } catch (err) {
      this.storeFailing = true;
      // The first refusal and every 100th: a full disk retried every --retry-ms must not flood the log.
      if (this.counts.failedBatches++ % 100 === 0) {
        this.deps.log.warn(
          {
            err,
            rows: values.length + events.length,
            failedBatches: this.counts.failedBatches,
            bus: this.deps.bus.kind,
          },
          this.deps.bus.kind === 'nats'
            ? 'history store refused a batch; retried'
            : 'history store refused a batch; dropped',
        );
      }
      throw err;
    }
    for (const [key, at] of kept.last) this.lastStored.set(key, at);
    this.counts.values += kept.rows.length;
    this.counts.events += events.length;
  }

  /** Turns one message into a value or an event row; false when it is neither. */
  private collect(d: Delivery, msg: { [key: string]: Json }, values: ValueRow[], events: EventRow[]): boolean {
    const uid = msg.uid;
    if (typeof uid !== 'string' || checkSeries(uid) !== undefined) return false;
    if (d.subject.startsWith(WRITES_PREFIX)) {
      if (typeof msg.resource !== 'string' || typeof msg.result !== 'string') return false;
      const detail: { [key: string]: Json } = {
        by: typeof msg.by === 'string' ? msg.by : 'unknown',
        resource: msg.resource,
        payload: msg.payload ?? null,
        result: msg.result,
      };
      if (typeof msg.reason === 'string') detail.reason = msg.reason;
      // The time the request was made, when the broker says; else when it reached the stream.
      const at = typeof msg.at === 'number' && Number.isSafeInteger(msg.at) ? msg.at : d.at;
      events.push({ at, uid, kind: 'write', detail, key: d.key });
      return true;
    }
    switch (msg.type) {
      case 'update':
        if (typeof msg.endpoint !== 'string' || checkSeries(uid, msg.endpoint) !== undefined) return false;
        values.push({ at: d.at, uid, resource: msg.endpoint, value: msg.data ?? null, key: d.key });
        return true;
      case 'new': {
        const detail: { [key: string]: Json } = {};
        if (typeof msg.gateway === 'string') detail.gateway = msg.gateway;
        if (typeof msg.protocol === 'string') detail.protocol = msg.protocol;
        events.push({ at: d.at, uid, kind: 'new', detail, key: d.key });
        return true;
      }
      case 'out':
        events.push({ at: d.at, uid, kind: 'out', detail: { reason: msg.reason ?? null }, key: d.key });
        return true;
      case 'reset':
        events.push({ at: d.at, uid, kind: 'reset', detail: {}, key: d.key });
        return true;
      default:
        return false;
    }
  }

  /**
   * Drops values that come sooner than their resource's minInterval after the last one stored. The last stored
   * times are only committed after the batch is stored, so a batch the store refused is judged afresh when it
   * comes back; a redelivered value that was stored already is within the interval of itself and skipped.
   */
  private async applyMinInterval(values: ValueRow[]): Promise<{ rows: ValueRow[]; last: Map<string, number> }> {
    const rows: ValueRow[] = [];
    const last = new Map<string, number>();
    for (const v of values) {
      const key = seriesKey(v.uid, v.resource);
      const min = (await this.settingsOf(v.uid, v.resource)).minIntervalMs ?? 0;
      const previous = last.get(key) ?? this.lastStored.get(key);
      if (min > 0 && previous !== undefined && Math.abs(v.at - previous) < min) {
        this.counts.skipped++;
        continue;
      }
      rows.push(v);
      last.set(key, v.at);
    }
    if (this.lastStored.size > MAX_CACHED_SERIES) this.lastStored.clear();
    return { rows, last };
  }

  private async settingsOf(uid: string, resource: string): Promise<ResourceSettings> {
    const key = seriesKey(uid, resource);
    let s = this.settings.get(key);
    if (s === undefined) {
      s = (await this.deps.store.getSettings(uid, resource)) ?? {};
      if (this.settings.size >= MAX_CACHED_SERIES) this.settings.clear();
      this.settings.set(key, s);
    }
    return s;
  }

  private onSettingsChanged(msg: BusMsg): void {
    const json = parseJson(Buffer.from(msg.data).toString());
    const body = json.ok ? (json.value as { uid?: unknown; resource?: unknown }) : undefined;
    if (typeof body?.uid === 'string' && typeof body.resource === 'string') {
      this.settings.delete(seriesKey(body.uid, body.resource));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Retention

  /** One pruning round: budgeted calls until nothing is left, each a short transaction, ingestion in between. */
  private pruneInBackground(): void {
    if (this.pruning) return;
    this.pruning = true;
    const round = async () => {
      for (;;) {
        const deleted = await this.deps.store.prune(Date.now(), this.config.retentionMs, this.config.pruneBudget);
        this.counts.pruned += deleted;
        if (deleted < this.config.pruneBudget || this.stopping !== undefined) return;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    };
    round()
      .catch((err) => this.deps.log.warn({ err }, 'history pruning failed; retried at the next interval'))
      .finally(() => {
        this.pruning = false;
      });
  }

  // ---------------------------------------------------------------------------------------------
  // Queries

  private onRequest(msg: BusMsg): void {
    const reply = msg.reply;
    if (reply === undefined) return;
    const started = performance.now();
    this.answer(msg.data)
      .catch((err: unknown): ErrorReply => {
        this.deps.log.warn({ err }, 'history query failed');
        return errorReply(503, ErrorCodes.Unavailable, `history store unavailable: ${(err as Error).message}`);
      })
      .then((body) => {
        this.querySeconds.observe((performance.now() - started) / 1000);
        this.deps.bus.publish(reply, Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)));
      })
      .catch((err) => this.deps.log.warn({ err }, 'history reply not sent'));
  }

  private async answer(data: Uint8Array): Promise<string | object> {
    const json = parseJson(Buffer.from(data).toString());
    if (!json.ok || typeof json.value !== 'object' || json.value === null || Array.isArray(json.value)) {
      return errorReply(400, ErrorCodes.BadShape, 'a history request is a JSON object');
    }
    const req = json.value as { [key: string]: Json };
    const badSeries = checkSeries(req.uid, req.op === 'events' ? undefined : req.resource);
    if (badSeries !== undefined) return errorReply(400, ErrorCodes.BadShape, badSeries);
    const uid = req.uid as string;
    switch (req.op) {
      case 'points':
        return this.points(req as unknown as PointsRequest);
      case 'events':
        return this.events(req as unknown as EventsRequest);
      case 'get-settings':
        return { settings: await this.settingsOf(uid, req.resource as string) } satisfies SettingsReply;
      case 'put-settings': {
        const checked = checkSettings(req.settings);
        if (!checked.ok) return errorReply(400, ErrorCodes.BadShape, checked.message);
        const resource = req.resource as string;
        await this.deps.store.putSettings(uid, resource, checked.value);
        this.settings.set(seriesKey(uid, resource), checked.value);
        this.deps.bus.publish(subjects.historySettings, Buffer.from(JSON.stringify({ uid, resource })));
        return { settings: checked.value } satisfies SettingsReply;
      }
      default:
        return errorReply(400, ErrorCodes.BadShape, 'op must be points, events, get-settings or put-settings');
    }
  }

  /** Checks a range sent over the bus as the REST API does (the bus is an edge too). */
  private range(req: { from?: Json; to?: Json; limit?: Json; step?: Json; agg?: Json }, maxLimit: number) {
    const str = (v: Json | undefined) => (v === undefined || v === null ? undefined : String(v));
    return checkRange(
      { from: str(req.from), to: str(req.to), limit: str(req.limit), step: str(req.step), agg: str(req.agg) },
      Date.now(),
      maxLimit,
      maxLimit,
    );
  }

  /**
   * One page of points as JSON text, at most PAGE_BYTES of them, with the cursor of the next page when more
   * may follow. Raw pages resume at the last time sent, skipping the points of that millisecond already sent.
   */
  private async points(req: PointsRequest): Promise<string | ErrorReply> {
    const checked = this.range(req, Number.MAX_SAFE_INTEGER);
    if (!checked.ok) return errorReply(400, ErrorCodes.BadRange, checked.message);
    const { from, to, limit, step, agg } = checked.value;
    const skip = Number.isSafeInteger(req.skip) && (req.skip as number) > 0 ? (req.skip as number) : 0;
    const wanted = Math.min(limit, PAGE_ROWS);
    const { uid, resource } = req;
    const store = this.deps.store;
    const rows =
      step === undefined
        ? (await store.query({ uid, resource, from, to, limit: wanted + skip })).slice(skip)
        : await store.query({ uid, resource, from, to, limit: wanted, step, agg });
    const parts: string[] = [];
    let bytes = 0;
    let sameAt = 0;
    for (const p of rows) {
      const text = JSON.stringify([p.at, p.value]);
      if (parts.length > 0 && bytes + text.length > PAGE_BYTES) break;
      parts.push(text);
      bytes += text.length + 1;
      sameAt = parts.length > 1 && rows[parts.length - 2].at === p.at ? sameAt + 1 : 1;
    }
    let next: { from: number; skip: number } | undefined;
    const more = parts.length < rows.length || rows.length === wanted;
    if (more && parts.length < limit && parts.length > 0) {
      const lastAt = rows[parts.length - 1].at;
      next =
        step === undefined
          ? { from: lastAt, skip: lastAt === from ? skip + sameAt : sameAt }
          : { from: lastAt + step, skip: 0 };
      if (next.from >= to) next = undefined;
    }
    const settings = await this.settingsOf(uid, resource);
    const meta: { next?: typeof next; units?: string; decimals?: number } = {};
    if (next !== undefined) meta.next = next;
    if (settings.units !== undefined) meta.units = settings.units;
    if (settings.decimals !== undefined) meta.decimals = settings.decimals;
    const metaText = JSON.stringify(meta).slice(1, -1);
    return `{"points":[${parts.join(',')}]${metaText === '' ? '' : `,${metaText}`}}`;
  }

  private async events(req: EventsRequest): Promise<EventsReply | ErrorReply> {
    const checked = this.range(req, MAX_EVENTS);
    if (!checked.ok) return errorReply(400, ErrorCodes.BadRange, checked.message);
    const { from, to, limit } = checked.value;
    const rows = await this.deps.store.events(req.uid, from, to, limit);
    return { events: rows.map((e) => ({ at: e.at, kind: e.kind, detail: e.detail })) };
  }
}
