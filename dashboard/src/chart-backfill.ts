// Card charts open with the last hour from the history service, then continue live (docs/dashboard.md, History).
// Only cards on screen ask, each resource once per page, a few requests at a time: a page of a thousand nodes
// must not send a thousand requests on load. With no history service (503) or no right to read it, the page stops
// asking and its charts stay live-only.
import { CHART_POINTS } from './chart.ts';
import { type HistoryClient, HistoryError, type HistoryPoint } from './history-client.ts';

/** How far back a card chart starts. */
export const BACKFILL_WINDOW_MS = 3_600_000;
/** Requests in flight at once, once the first has answered. */
const CONCURRENCY = 4;

interface Job {
  uid: string;
  endpoint: string;
  apply(points: HistoryPoint[]): void;
}

export class ChartBackfill {
  private readonly asked = new Set<string>();
  private readonly queue: Job[] = [];
  private running = 0;
  private stopped = false;
  /** One request goes alone first: without a history service the page then logs one 503, not four. */
  private answered = false;

  constructor(private readonly client: Pick<HistoryClient, 'points'>) {}

  /**
   * Asks once per resource for the last hour, in CHART_POINTS buckets; `apply` gets them oldest first. The last value
   * of each bucket, not the mean: devices that send "23.5°C" as text have no mean, and one request serves both.
   */
  request(uid: string, endpoint: string, apply: (points: HistoryPoint[]) => void): void {
    const key = `${uid}\u0000${endpoint}`;
    if (this.stopped || this.asked.has(key)) return;
    this.asked.add(key);
    this.queue.push({ uid, endpoint, apply });
    this.pump();
  }

  /** Forgets what was asked (a new session: another token may see more). */
  reset(): void {
    this.asked.clear();
    this.queue.length = 0;
    this.stopped = false;
    this.answered = false;
  }

  private pump(): void {
    while (this.running < (this.answered ? CONCURRENCY : 1) && !this.stopped) {
      const job = this.queue.shift();
      if (job === undefined) return;
      this.running++;
      const done = () => {
        this.running--;
        this.pump();
      };
      this.run(job).then(done, (err: unknown) => {
        console.warn('mycelium: a chart could not take its history', err);
        done();
      });
    }
  }

  private async run(job: Job): Promise<void> {
    const to = Date.now();
    const from = to - BACKFILL_WINDOW_MS;
    try {
      const answer = await this.client.points(job.uid, job.endpoint, {
        from,
        to,
        step: Math.ceil(BACKFILL_WINDOW_MS / CHART_POINTS),
        agg: 'last',
        limit: CHART_POINTS,
      });
      this.answered = true;
      job.apply(answer.points);
    } catch (err) {
      // 503: no history service; 401/403: this token may not read it. Either way, every other card would hear the
      // same: stop asking. Anything else (one node's series refused) costs that chart only.
      if (err instanceof HistoryError && (err.unavailable || err.status === 401 || err.status === 403)) {
        this.stopped = true;
        this.queue.length = 0;
      } else {
        this.answered = true;
      }
    }
  }
}
