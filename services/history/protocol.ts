// What the broker (or any client) and the history service say to each other on `myc.history.query`
// (request/reply, queue group `history`), and the checks of a query's range, shared by the REST API, the
// service and `mycelium history export`. No I/O here.
import { ErrorCode } from '../protocol/errors.ts';
import type { Json } from '../protocol/messages.ts';
import { isIdentifier } from '../protocol/schema.ts';
import { AGGREGATES, type Aggregate, type EventKind, type RangeQuery, type ResourceSettings } from './store.ts';

/** Most points one JSON answer holds (`limit` beyond it is a 400); CSV streams without a cap. */
export const MAX_JSON_POINTS = 100_000;
/** Most buckets a `step` query may ask for: (to - from) / step. */
export const MAX_BUCKETS = 10_000;
/** Widest range one query may cover. */
export const MAX_RANGE_MS = 10 * 366 * 86_400_000;
/** Default range when `from` is absent: the last day before `to`. */
export const DEFAULT_RANGE_MS = 86_400_000;
/** Most events one answer holds. */
export const MAX_EVENTS = 10_000;
/**
 * Bytes of points one bus reply carries at most, well under NATS's default 1 MiB payload: a bigger answer comes
 * in pages, each asked for with the cursor the previous one returned (any worker of the group can answer).
 */
export const PAGE_BYTES = 256 * 1024;
/** Rows one page reads from the store at most. */
export const PAGE_ROWS = 5_000;

/** Where the next page starts: points at `from` or later, skipping the first `skip` stamped exactly `from`. */
export interface PageCursor {
  from: number;
  skip: number;
}

/** The store's range query, page by page: `limit` is the points still wanted (a page answers at most some). */
export interface PointsRequest extends RangeQuery {
  op: 'points';
  /** Raw points stamped exactly `from` already received. */
  skip?: number;
}

export interface EventsRequest {
  op: 'events';
  uid: string;
  from: number;
  to: number;
  limit: number;
}

export interface GetSettingsRequest {
  op: 'get-settings';
  uid: string;
  resource: string;
}

export interface PutSettingsRequest {
  op: 'put-settings';
  uid: string;
  resource: string;
  settings: ResourceSettings;
}

export type HistoryRequest = PointsRequest | EventsRequest | GetSettingsRequest | PutSettingsRequest;

export interface PointsReply {
  points: [number, Json][];
  next?: PageCursor;
  units?: string;
  decimals?: number;
}

export interface HistoryEvent {
  at: number;
  kind: EventKind;
  detail: Json;
}

export interface EventsReply {
  events: HistoryEvent[];
}

export interface SettingsReply {
  settings: ResourceSettings;
}

/** A refusal or a failure: `status` is the HTTP status the broker answers with. */
export interface ErrorReply {
  error: string;
  message: string;
  status: number;
}

/** The stable codes (services/protocol/errors.ts) history answers carry. */
export const ErrorCodes = {
  BadRange: ErrorCode.BadRange,
  BadShape: ErrorCode.BadShape,
  Unavailable: ErrorCode.Unavailable,
} as const;

/** A time given as epoch milliseconds or ISO 8601; undefined when it is neither. */
export function parseTime(text: string): number | undefined {
  if (/^-?\d+$/.test(text)) {
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : undefined;
  }
  // Date.parse accepts more than ISO 8601 ("Tuesday"); insist on the ISO shape first.
  if (!/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(text)) return undefined;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms : undefined;
}

export interface RangeParams {
  from?: string;
  to?: string;
  limit?: string;
  step?: string;
  agg?: string;
}

export interface CheckedRange {
  from: number;
  to: number;
  limit: number;
  step?: number;
  agg?: Aggregate;
}

type Checked<T> = { ok: true; value: T } | { ok: false; message: string };

const bad = (message: string): { ok: false; message: string } => ({ ok: false, message });

/**
 * Checks a query's parameters: times as epoch ms or ISO 8601, from < to, the range at most MAX_RANGE_MS,
 * `limit` from 1 to `maxLimit`, `step` at least 1 ms and at most MAX_BUCKETS buckets, `agg` one of AGGREGATES.
 */
export function checkRange(p: RangeParams, now: number, maxLimit: number, defaultLimit: number): Checked<CheckedRange> {
  const to = p.to === undefined ? now : parseTime(p.to);
  if (to === undefined) return bad('to must be epoch milliseconds or an ISO 8601 time');
  const from = p.from === undefined ? to - DEFAULT_RANGE_MS : parseTime(p.from);
  if (from === undefined) return bad('from must be epoch milliseconds or an ISO 8601 time');
  if (from >= to) return bad('from must be before to');
  if (to - from > MAX_RANGE_MS) return bad(`the range may span at most ${MAX_RANGE_MS / 86_400_000} days`);
  let limit = defaultLimit;
  if (p.limit !== undefined) {
    if (!/^\d+$/.test(p.limit)) return bad('limit must be a positive integer');
    limit = Number(p.limit);
    if (limit < 1 || limit > maxLimit) return bad(`limit must be from 1 to ${maxLimit}`);
  }
  const out: CheckedRange = { from, to, limit };
  if (p.step !== undefined) {
    if (!/^\d+$/.test(p.step)) return bad('step must be a whole number of milliseconds');
    const step = Number(p.step);
    if (step < 1) return bad('step must be at least 1 ms');
    if (Math.ceil((to - from) / step) > MAX_BUCKETS) {
      return bad(
        `step too small: at most ${MAX_BUCKETS} buckets per query (use a step of at least ${Math.ceil((to - from) / MAX_BUCKETS)} ms)`,
      );
    }
    out.step = step;
  }
  if (p.agg !== undefined) {
    if (!(AGGREGATES as readonly string[]).includes(p.agg)) return bad(`agg must be one of ${AGGREGATES.join(', ')}`);
    if (out.step === undefined) return bad('agg needs a step');
    out.agg = p.agg as Aggregate;
  }
  return { ok: true, value: out };
}

/** Checks the settings a PUT may store; unknown fields are refused, not ignored. */
export function checkSettings(body: unknown): Checked<ResourceSettings> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return bad('settings must be a JSON object');
  const out: ResourceSettings = {};
  for (const [key, value] of Object.entries(body)) {
    switch (key) {
      case 'maxHistory':
      case 'retentionMs':
      case 'minIntervalMs': {
        if (!Number.isSafeInteger(value) || (value as number) < (key === 'minIntervalMs' ? 0 : 1)) {
          return bad(`${key} must be a ${key === 'minIntervalMs' ? 'non-negative' : 'positive'} integer`);
        }
        out[key] = value as number;
        break;
      }
      case 'decimals':
        if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 15)
          return bad('decimals must be an integer from 0 to 15');
        out.decimals = value as number;
        break;
      case 'units':
        // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
        if (typeof value !== 'string' || value.length > 32 || /[\u0000-\u001f\u007f-\u009f]/.test(value))
          return bad('units must be text of at most 32 characters without control characters');
        out.units = value;
        break;
      default:
        return bad(`unknown setting ${JSON.stringify(key.slice(0, 40))}`);
    }
  }
  return { ok: true, value: out };
}

/** uid and resource name follow the identifier rule of every frame. */
export function checkSeries(uid: unknown, resource?: unknown): string | undefined {
  const badUid = isIdentifier(uid);
  if (badUid !== undefined) return `uid ${badUid}`;
  if (resource === undefined) return undefined;
  const badName = isIdentifier(resource);
  return badName === undefined ? undefined : `resource name ${badName}`;
}

/** The CSV header of a point export. */
export const CSV_HEADER = 'time,value\n';

/** One CSV row (RFC 4180): ISO time, then the number, the text or the JSON, quoted when it must be. */
export function csvRow(at: number, value: Json): string {
  return `${new Date(at).toISOString()},${csvField(value)}\n`;
}

function csvField(value: Json): string {
  if (typeof value === 'number') return String(value);
  let text = typeof value === 'string' ? value : JSON.stringify(value);
  // A device's text starting with = + - @ (or a tab or CR) would run as a formula in a spreadsheet (OWASP "CSV
  // injection"): a leading ' keeps it text.
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}
