// The arithmetic of the history view, without DOM or network: the range presets, how a range becomes a query
// that stays small whatever the node's rate, and a node's presence events as online/offline bands.

export const HOUR_MS = 3_600_000;

/** The presets of the range picker; `live` ranges slide with the clock and take new values as they come. */
export const RANGE_PRESETS = [
  { id: '1h', label: '1 h', ms: HOUR_MS },
  { id: '24h', label: '24 h', ms: 24 * HOUR_MS },
  { id: '7d', label: '7 d', ms: 7 * 24 * HOUR_MS },
] as const;

export type PresetId = (typeof RANGE_PRESETS)[number]['id'];

/** Raw points asked for first; when the range holds more, the view asks again in buckets. */
export const RAW_POINTS = 4_000;
/** Buckets a bucketed query asks for: about two per pixel of a wide chart. */
export const BUCKETS = 2_000;
/** The narrowest range zoom goes down to. */
export const MIN_SPAN_MS = 10_000;
/** The widest: a year, well inside what one query may span (the broker refuses beyond ten). */
export const MAX_SPAN_MS = 366 * 24 * HOUR_MS;

export interface Range {
  from: number;
  to: number;
}

/** One bucket width that gives about BUCKETS points over the range (whole milliseconds, at least 1). */
export function bucketStep(r: Range): number {
  return Math.max(1, Math.ceil((r.to - r.from) / BUCKETS));
}

/** A range zoomed around its centre by `factor` (>1 widens), within MIN_SPAN_MS..MAX_SPAN_MS, never past `now`. */
export function zoomed(r: Range, factor: number, now: number): Range {
  const span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, (r.to - r.from) * factor));
  const mid = (r.from + r.to) / 2;
  return clampToNow({ from: Math.round(mid - span / 2), to: Math.round(mid + span / 2) }, now);
}

/** A range moved by `fraction` of its width (negative: into the past), never past `now`. */
export function panned(r: Range, fraction: number, now: number): Range {
  const shift = Math.round((r.to - r.from) * fraction);
  return clampToNow({ from: r.from + shift, to: r.to + shift }, now);
}

function clampToNow(r: Range, now: number): Range {
  if (r.to <= now) return r;
  return { from: now - (r.to - r.from), to: now };
}

export interface Band {
  from: number;
  to: number;
  online: boolean;
}

/**
 * The node's presence over [from, to) as bands. Events are `new` (online), `out` (offline) and others (ignored),
 * oldest first. The state before the first event is the opposite of that event; with no event at all, `nowOnline`
 * (the node's status in the live model) holds for the whole range.
 */
export function presenceBands(events: readonly { at: number; kind: string }[], r: Range, nowOnline: boolean): Band[] {
  const changes = events.filter((e) => (e.kind === 'new' || e.kind === 'out') && e.at >= r.from && e.at < r.to);
  let online = changes.length === 0 ? nowOnline : changes[0].kind === 'out';
  const bands: Band[] = [];
  let start = r.from;
  for (const e of changes) {
    const next = e.kind === 'new';
    if (next === online) continue;
    if (e.at > start) bands.push({ from: start, to: e.at, online });
    start = e.at;
    online = next;
  }
  if (r.to > start) bands.push({ from: start, to: r.to, online });
  return bands;
}

/** `datetime-local` input value (local time, minutes) for an epoch time, and back. */
export function toLocalInput(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fromLocalInput(text: string): number | undefined {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(text)) return undefined;
  const ms = new Date(text).getTime();
  return Number.isFinite(ms) ? ms : undefined;
}
