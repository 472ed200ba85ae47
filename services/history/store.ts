// The history store's interface: what the history service needs from a database, whatever the database.
// Two implementations: store-sqlite.ts (embedded default, better-sqlite3) and store-postgres.ts (at scale, pg;
// a TimescaleDB hypertable when the extension is present). test/history-store.contract.test.ts runs the same
// checks against both, as test/bus.contract.test.ts does for the two buses.
import type { Json } from '../protocol/messages.ts';

/** One resource value as a node reported it. */
export interface ValueRow {
  /** Epoch milliseconds, when the broker saw the value. */
  at: number;
  uid: string;
  resource: string;
  /** Numbers are stored as numbers, strings as text, anything else as JSON. */
  value: Json;
  /**
   * Idempotency key: the same event delivered twice (a JetStream redelivery) carries the same key and is stored
   * once. On NATS: `<stream>:<stream sequence>`; in-process: `<service start id>:<counter>`.
   */
  key: string;
}

export type EventKind = 'new' | 'out' | 'reset' | 'write';

/** A node event: presence (`new`, `out` with its reason, `reset`) or a write request and its result. */
export interface EventRow {
  at: number;
  uid: string;
  kind: EventKind;
  /** `out`: {reason}; `write`: {by, resource, payload, result, reason?}; `new`: {protocol?, resources?}. */
  detail: Json;
  key: string;
}

/** rhizo-server's sequence attributes, per resource. Absent fields take the service's defaults. */
export interface ResourceSettings {
  /** Keep at most this many values (the oldest go first). */
  maxHistory?: number;
  /** Values older than this are deleted (default: the service's --retention). */
  retentionMs?: number;
  /** Store at most one value per interval; values arriving sooner are broadcast live but not stored. */
  minIntervalMs?: number;
  units?: string;
  decimals?: number;
}

export const AGGREGATES = ['avg', 'min', 'max', 'last', 'count'] as const;
export type Aggregate = (typeof AGGREGATES)[number];

export interface RangeQuery {
  uid: string;
  resource: string;
  /** Inclusive, epoch ms. */
  from: number;
  /** Exclusive, epoch ms. */
  to: number;
  /** Most points returned (the newest-first cut is not applied: the first `limit` points in time order). */
  limit: number;
  /** With `step` (ms): one point per bucket [from + k*step, from + (k+1)*step), stamped at the bucket start. */
  step?: number;
  /** How a bucket's values become one; default `avg` for numbers. `avg|min|max` ignore non-numeric values. */
  agg?: Aggregate;
}

export interface Point {
  at: number;
  value: Json;
}

export interface StoreStats {
  values: number;
  events: number;
  /** Bytes the database takes on disk (SQLite: file size with WAL; PostgreSQL: pg_total_relation_size). */
  bytes: number;
}

export interface HistoryStore {
  readonly kind: 'sqlite' | 'postgres';
  /** Creates the schema when missing (idempotent). */
  open(): Promise<void>;
  close(): Promise<void>;
  /** One batch in one transaction. Rows whose key is already stored are skipped, so a redelivery stores once. */
  insert(values: readonly ValueRow[], events: readonly EventRow[]): Promise<void>;
  /** Points in time order within [from, to), raw or bucketed. */
  query(q: RangeQuery): Promise<Point[]>;
  /** Every raw point in [from, to) in time order, read in chunks: a million-row CSV never sits in memory. */
  stream(q: Pick<RangeQuery, 'uid' | 'resource' | 'from' | 'to'>): AsyncIterable<Point>;
  /** A node's events in [from, to), oldest first, at most `limit`. */
  events(uid: string, from: number, to: number, limit: number): Promise<EventRow[]>;
  getSettings(uid: string, resource: string): Promise<ResourceSettings | undefined>;
  putSettings(uid: string, resource: string, settings: ResourceSettings): Promise<void>;
  /**
   * Deletes values beyond their resource's retention age or maxHistory (and events beyond the default retention),
   * at most `budget` rows per call, so the background pruner never holds the database for long.
   * Returns the rows deleted.
   */
  prune(now: number, defaultRetentionMs: number, budget: number): Promise<number>;
  stats(): Promise<StoreStats>;
}
