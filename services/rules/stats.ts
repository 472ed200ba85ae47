// What the service keeps about each rule's runs: counts, the last runs, the last error, and the duration
// histogram (services/common/metrics.ts, so Prometheus sees the same numbers the REST API reports).
import { type Counter, type Histogram, LATENCY_BUCKETS_S, type Metrics } from '../common/metrics.ts';
import { bucketPercentileMs } from './merge.ts';
import type { DurationBuckets, RunRecord } from './protocol.ts';
import type { RunOutcome, RunStatus } from './runner.ts';

/** Runs that count toward disabling a rule. */
export const FAILURES: ReadonlySet<RunStatus> = new Set(['error', 'time-limit', 'memory', 'exited', 'timeout']);

export class RuleStats {
  runs = 0;
  errors = 0;
  skipped = 0;
  dropped = 0;
  consecutiveFailures = 0;
  lastError?: { at: number; message: string };
  readonly recent: RunRecord[] = [];
  readonly duration: Histogram;
  private readonly counters = new Map<string, Counter>();

  constructor(
    readonly rule: string,
    private readonly metrics: Metrics,
    private readonly keep: number,
  ) {
    this.duration = metrics.histogram('rule_duration_seconds', 'wall time of a rule run', LATENCY_BUCKETS_S, { rule });
  }

  record(at: number, o: RunOutcome, trigger: string, uid: string | undefined): void {
    this.counter(o.status).inc();
    if (o.status === 'dropped') {
      this.dropped++;
      return;
    }
    if (o.status === 'skipped') {
      this.skipped++;
      return;
    }
    this.runs++;
    this.duration.observe(o.ms / 1000);
    const r: RunRecord = { at, status: o.status, ms: Math.round(o.ms * 100) / 100, trigger };
    if (uid !== undefined) r.uid = uid;
    if (o.error !== undefined) r.error = o.error;
    this.recent.unshift(r);
    if (this.recent.length > this.keep) this.recent.pop();
    if (FAILURES.has(o.status)) {
      this.errors++;
      this.consecutiveFailures++;
      this.lastError = { at, message: `${o.status}: ${o.error ?? ''}`.slice(0, 2000) };
    } else {
      this.consecutiveFailures = 0;
    }
  }

  /** A percentile of the durations (ms), read from the histogram's buckets: the bucket's upper bound. */
  percentileMs(p: number): number | undefined {
    return bucketPercentileMs(this.boundsMs, this.duration.counts, p);
  }

  /** The histogram as the broker merges it with other workers' (merge.ts). */
  buckets(): DurationBuckets {
    return { boundsMs: [...this.boundsMs], counts: [...this.duration.counts] };
  }

  private get boundsMs(): number[] {
    return this.duration.bounds.map((b) => b * 1000);
  }

  private counter(status: string): Counter {
    let c = this.counters.get(status);
    if (c === undefined) {
      c = this.metrics.counter('rule_runs_total', 'rule runs by outcome', { rule: this.rule, status });
      this.counters.set(status, c);
    }
    return c;
  }
}
