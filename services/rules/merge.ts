// Several rules workers each run every rule for their share of the nodes, so one rule's picture is the sum of
// theirs: the broker asks every live worker (rules-api.ts) and merges their records here. Pure functions, no I/O.
import type { DurationBuckets, RuleRecord, RunRecord, WorkerRuleRecord } from './protocol.ts';

/** A percentile (0-1) of a histogram, in ms: the upper bound of the bucket it falls in (Infinity: above them all). */
export function bucketPercentileMs(
  boundsMs: readonly number[],
  counts: readonly number[],
  p: number,
): number | undefined {
  let total = 0;
  for (const c of counts) total += c;
  if (total === 0) return undefined;
  const target = Math.ceil(total * p);
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i] as number;
    if (seen >= target) return i < boundsMs.length ? (boundsMs[i] as number) : Number.POSITIVE_INFINITY;
  }
  return undefined;
}

/** Worse first: the merged status is the worst any worker reports (a rule disabled anywhere is disabled). */
const STATUS_RANK: Record<RuleRecord['status'], number> = { disabled: 0, failed: 1, loading: 2, running: 3 };

export interface WorkersSeen {
  answered: string[];
  expected: string[];
}

/**
 * One rule as every answering worker reports it: counts summed, the latest last run and last error, the recent
 * runs of all merged newest first (as many as one worker keeps), the worst status with its reason, and p50/p99
 * from the summed histograms (or, when the workers' bounds differ, the largest of theirs, labelled).
 */
export function mergeRule(records: readonly WorkerRuleRecord[], seen: WorkersSeen): RuleRecord {
  const sorted = [...records].sort((a, b) => a.worker.localeCompare(b.worker));
  const first = sorted[0];
  if (first === undefined) throw new Error('mergeRule: no record');
  const worst = sorted.reduce((w, r) => (STATUS_RANK[r.status] < STATUS_RANK[w.status] ? r : w), first);
  const keep = Math.max(...sorted.map((r) => r.recent.length));
  const several = sorted.length > 1;
  const m: RuleRecord = {
    name: first.name,
    file: first.file,
    status: worst.status,
    triggers: first.triggers,
    timeLimitMs: first.timeLimitMs,
    runs: sum(sorted, 'runs'),
    errors: sum(sorted, 'errors'),
    skipped: sum(sorted, 'skipped'),
    dropped: sum(sorted, 'dropped'),
    restarts: sum(sorted, 'restarts'),
    consecutiveFailures: Math.max(...sorted.map((r) => r.consecutiveFailures)),
    recent: sorted
      .flatMap((r) => r.recent.map((run): RunRecord => (several ? { ...run, worker: r.worker } : run)))
      .sort((a, b) => b.at - a.at)
      .slice(0, keep),
    worker: sorted.map((r) => r.worker).join(','),
    workers: { ...seen, missing: seen.expected.filter((id) => !seen.answered.includes(id)) },
  };
  if (worst.reason !== undefined) {
    const differ = sorted.some((r) => r.status !== worst.status);
    m.reason = differ ? `${worst.reason} (on ${worst.worker})` : worst.reason;
  }
  const description = sorted.find((r) => r.description !== undefined)?.description;
  if (description !== undefined) m.description = description;
  const lastRun = latest(sorted.map((r) => r.lastRun));
  if (lastRun !== undefined) m.lastRun = lastRun;
  const lastError = latest(sorted.map((r) => r.lastError));
  if (lastError !== undefined) m.lastError = lastError;
  if (several) {
    m.byWorker = sorted.map((r) => ({
      worker: r.worker,
      status: r.status,
      runs: r.runs,
      errors: r.errors,
      ...(r.reason === undefined ? {} : { reason: r.reason }),
    }));
  }
  mergePercentiles(m, sorted);
  return m;
}

/** Every rule any worker reports, merged by name, sorted by name. */
export function mergeRules(perWorker: readonly WorkerRuleRecord[][], seen: WorkersSeen): RuleRecord[] {
  const byName = new Map<string, WorkerRuleRecord[]>();
  for (const list of perWorker) {
    for (const r of list) {
      const same = byName.get(r.name);
      if (same === undefined) byName.set(r.name, [r]);
      else same.push(r);
    }
  }
  return [...byName.values()].map((rs) => mergeRule(rs, seen)).sort((a, b) => a.name.localeCompare(b.name));
}

function mergePercentiles(m: RuleRecord, records: readonly WorkerRuleRecord[]): void {
  const withRuns = records.filter((r) => r.runs > 0);
  if (withRuns.length === 0) return;
  const buckets = withRuns.map((r) => r.buckets);
  const bounds = buckets[0]?.boundsMs;
  const alike = (b: DurationBuckets | undefined): b is DurationBuckets =>
    b !== undefined &&
    bounds !== undefined &&
    b.counts.length === bounds.length + 1 &&
    b.boundsMs.length === bounds.length &&
    b.boundsMs.every((x, i) => x === bounds[i]);
  if (bounds !== undefined && buckets.every(alike)) {
    const counts = new Array<number>(bounds.length + 1).fill(0);
    for (const b of buckets)
      for (let i = 0; i < counts.length; i++) counts[i] = (counts[i] as number) + (b.counts[i] as number);
    setFinite(m, 'p50Ms', bucketPercentileMs(bounds, counts, 0.5));
    setFinite(m, 'p99Ms', bucketPercentileMs(bounds, counts, 0.99));
    m.percentiles = 'histogram';
    return;
  }
  // No common histogram (workers of different versions): the largest of each, an upper bound, said so.
  setFinite(m, 'p50Ms', max(withRuns.map((r) => r.p50Ms)));
  setFinite(m, 'p99Ms', max(withRuns.map((r) => r.p99Ms)));
  m.percentiles = 'max-of-workers';
}

function setFinite(m: RuleRecord, key: 'p50Ms' | 'p99Ms', v: number | undefined): void {
  if (v !== undefined && Number.isFinite(v)) m[key] = v;
}

function max(values: Array<number | undefined>): number | undefined {
  const xs = values.filter((v): v is number => v !== undefined);
  return xs.length === 0 ? undefined : Math.max(...xs);
}

function sum(records: readonly RuleRecord[], key: 'runs' | 'errors' | 'skipped' | 'dropped' | 'restarts'): number {
  let n = 0;
  for (const r of records) n += r[key];
  return n;
}

function latest<T extends { at: number }>(values: Array<T | undefined>): T | undefined {
  let best: T | undefined;
  for (const v of values) if (v !== undefined && (best === undefined || v.at > best.at)) best = v;
  return best;
}
