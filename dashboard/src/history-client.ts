// The page's client of the broker's history routes (docs/history.md): points, node events and CSV exports. The
// token travels as `Authorization: Bearer` on every fetch (never in a URL, so it stays out of access logs, the
// address bar and the browser history); the broker answers cross-origin reads that carry a token
// (services/broker/cors.ts). Answers are checked before use: the page draws what devices sent.
import type { Json } from '../../services/protocol/messages.ts';

export type HistoryPoint = [at: number, value: Json];

export interface PointsAnswer {
  points: HistoryPoint[];
  units?: string;
  decimals?: number;
}

export interface PresenceEvent {
  at: number;
  kind: string;
}

/** A refusal by the broker or the history service: HTTP status, stable code, message. */
export class HistoryError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  /** No history service runs (or it does not answer): the page goes on live only. */
  get unavailable(): boolean {
    return this.status === 503;
  }
}

/** The broker's HTTP origin from the WebSocket URL the page was given (ws://host:port[/ws]). */
export function brokerHttpBase(brokerUrl: string): string {
  return brokerUrl
    .replace(/^ws(s?):/i, 'http$1:')
    .replace(/\/ws\/?$/, '')
    .replace(/\/+$/, '');
}

export interface RangeQuery {
  from: number;
  to: number;
  limit?: number;
  step?: number;
  agg?: 'avg' | 'min' | 'max' | 'last' | 'count';
}

export class HistoryClient {
  private readonly base: string;

  constructor(
    brokerUrl: string,
    private readonly token: () => string | undefined,
  ) {
    this.base = `${brokerHttpBase(brokerUrl)}/api/v1/nodes`;
  }

  async points(uid: string, resource: string, q: RangeQuery, signal?: AbortSignal): Promise<PointsAnswer> {
    const body = await this.json(this.seriesUrl(uid, resource, q), signal);
    if (!Array.isArray(body.points)) throw new HistoryError(502, 'MYC_ERR_BAD_ANSWER', 'no points in the answer');
    const points: HistoryPoint[] = [];
    for (const p of body.points as unknown[]) {
      if (Array.isArray(p) && typeof p[0] === 'number' && Number.isFinite(p[0])) points.push([p[0], p[1] as Json]);
    }
    return {
      points,
      ...(typeof body.units === 'string' ? { units: body.units } : {}),
      ...(typeof body.decimals === 'number' ? { decimals: body.decimals } : {}),
    };
  }

  async events(uid: string, from: number, to: number, signal?: AbortSignal): Promise<PresenceEvent[]> {
    const body = await this.json(`${this.base}/${encodeURIComponent(uid)}/events?from=${from}&to=${to}`, signal);
    if (!Array.isArray(body.events)) throw new HistoryError(502, 'MYC_ERR_BAD_ANSWER', 'no events in the answer');
    const out: PresenceEvent[] = [];
    for (const e of body.events as unknown[]) {
      if (typeof e !== 'object' || e === null) continue;
      const { at, kind } = e as { at?: unknown; kind?: unknown };
      if (typeof at === 'number' && typeof kind === 'string') out.push({ at, kind });
    }
    return out;
  }

  /** The range as the broker's CSV export (header and rows), as a Blob the page hands to a download link. */
  async csv(uid: string, resource: string, from: number, to: number): Promise<Blob> {
    const res = await this.get(`${this.seriesUrl(uid, resource, { from, to })}&format=csv`);
    return res.blob();
  }

  private seriesUrl(uid: string, resource: string, q: RangeQuery): string {
    const params = new URLSearchParams({ from: String(Math.floor(q.from)), to: String(Math.ceil(q.to)) });
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    if (q.step !== undefined) params.set('step', String(q.step));
    if (q.agg !== undefined) params.set('agg', q.agg);
    return `${this.base}/${encodeURIComponent(uid)}/resources/${encodeURIComponent(resource)}/history?${params}`;
  }

  private async json(url: string, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const body: unknown = await (await this.get(url, signal)).json();
    if (typeof body !== 'object' || body === null) {
      throw new HistoryError(502, 'MYC_ERR_BAD_ANSWER', 'the answer is not a JSON object');
    }
    return body as Record<string, unknown>;
  }

  private async get(url: string, signal?: AbortSignal): Promise<Response> {
    const token = this.token();
    let res: Response;
    try {
      res = await fetch(url, {
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        cache: 'no-store',
        signal,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      // Unreachable broker (or a refused preflight): as good as no history service for the page.
      throw new HistoryError(503, 'MYC_ERR_UNAVAILABLE', 'the broker cannot be reached');
    }
    if (res.ok) return res;
    let code = 'MYC_ERR_HTTP';
    let message = `HTTP ${res.status}`;
    try {
      const body = (await res.json()) as { error?: unknown; message?: unknown };
      if (typeof body.error === 'string') code = body.error;
      if (typeof body.message === 'string') message = body.message;
    } catch {
      // Not JSON: keep the status alone.
    }
    throw new HistoryError(res.status, code, message);
  }
}
