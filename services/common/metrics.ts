// Prometheus metrics for one service instance, on a prom-client Registry of its own (several services share a
// process under `mycelium up` and in tests, so never prom-client's global registry).
//
// The hot path never calls prom-client: a counter is a plain number bumped per message and a histogram a few
// plain numbers (prom-client's observe() costs ~0.4 µs with its label hashing, ten times ours; measured in
// docs/benchmarks.md). Both are read when Prometheus scrapes, through prom-client collectors, which also
// render the text format and add the process metrics and event-loop lag (collectDefaultMetrics). prom-client
// itself is loaded at the first scrape, not at start-up: nothing needs it before.
import { cjsExports } from './cjs.ts';
import type { Counter as PromCounter, Gauge as PromGauge, Histogram as PromHistogram, Registry } from 'prom-client';

type Labels = Record<string, string>;

export class Counter {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

/** Observations counted into fixed buckets: no allocation, no label lookup. Cumulated when scraped. */
export class Histogram {
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.counts[i]++;
  }
}

/** Buckets in seconds for work inside one process: 50 µs to 2.5 s. */
export const LATENCY_BUCKETS_S: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];

interface Series {
  labels: Labels;
  /** Counters and gauges: the value now. */
  read?: () => number;
  /** Histograms: the numbers the hot path keeps. */
  histogram?: Histogram;
}

interface Family {
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  buckets?: readonly number[];
  series: Series[];
}

export interface MetricsOptions {
  /** Process metrics (CPU, memory, handles, GC) and event-loop lag; on by default. */
  defaultMetrics?: boolean;
}

type PromClient = typeof import('prom-client');

export class Metrics {
  private readonly families = new Map<string, Family>();
  private readonly defaultMetrics: boolean;
  /** prom-client and this instance's registry, once the first scrape loaded them. */
  private prom?: { client: PromClient; registry: Registry };
  private loading?: Promise<Registry>;

  constructor(
    private readonly prefix = 'mycelium_',
    options: MetricsOptions = {},
  ) {
    this.defaultMetrics = options.defaultMetrics ?? true;
  }

  counter(name: string, help: string, labels: Labels = {}): Counter {
    const c = new Counter();
    this.add(name, help, 'counter', { labels, read: () => c.value });
    return c;
  }

  /** A counter whose value another object keeps (a service's plain counts); `read` must never decrease. */
  counterFrom(name: string, help: string, read: () => number, labels: Labels = {}): void {
    this.add(name, help, 'counter', { labels, read });
  }

  gauge(name: string, help: string, read: () => number, labels: Labels = {}): void {
    this.add(name, help, 'gauge', { labels, read });
  }

  /** A counter per label value, created on first use (for reasons that are not known up front). */
  counterFamily(name: string, help: string, labelName: string): (labelValue: string) => Counter {
    const made = new Map<string, Counter>();
    return (labelValue) => {
      let c = made.get(labelValue);
      if (c === undefined) {
        c = this.counter(name, help, { [labelName]: labelValue });
        made.set(labelValue, c);
      }
      return c;
    };
  }

  /** A histogram with fixed `buckets` (upper bounds, ascending) and fixed labels. */
  histogram(name: string, help: string, buckets: readonly number[], labels: Labels = {}): Histogram {
    const histogram = new Histogram(buckets);
    this.add(name, help, 'histogram', { labels, histogram }, buckets);
    return histogram;
  }

  /** This instance's prom-client registry (loading prom-client the first time): more metrics may be added to it. */
  registry(): Promise<Registry> {
    this.loading ??= this.load();
    return this.loading;
  }

  /** The Prometheus text exposition (format 0.0.4) of everything in the registry: what GET /metrics serves. */
  async scrape(): Promise<string> {
    return (await this.registry()).metrics();
  }

  /**
   * This instance's own counters and gauges (not the process metrics or histograms) in the text format,
   * synchronously: for in-process readers such as tests, which read a counter right after an action.
   */
  render(): string {
    const lines: string[] = [];
    for (const [name, f] of this.families) {
      if (f.type === 'histogram') continue;
      lines.push(`# HELP ${this.prefix}${name} ${f.help}`, `# TYPE ${this.prefix}${name} ${f.type}`);
      for (const s of f.series) lines.push(`${this.prefix}${name}${labelText(s.labels)} ${s.read?.()}`);
    }
    return `${lines.join('\n')}\n`;
  }

  private async load(): Promise<Registry> {
    const client = cjsExports(await import('prom-client'), 'Registry');
    const registry = new client.Registry();
    if (this.defaultMetrics) {
      // Event-loop lag is sampled by Node's monitorEventLoopDelay every 10 ms (from this first scrape on); it
      // reports mean, percentiles and max.
      client.collectDefaultMetrics({ register: registry, prefix: this.prefix, eventLoopMonitoringPrecision: 10 });
    }
    this.prom = { client, registry };
    for (const [name, family] of this.families) this.expose(name, family);
    return registry;
  }

  private add(name: string, help: string, type: Family['type'], series: Series, buckets?: readonly number[]): void {
    const family = this.families.get(name);
    if (family === undefined) {
      const created: Family = { help, type, buckets, series: [series] };
      this.families.set(name, created);
      if (this.prom !== undefined) this.expose(name, created);
      return;
    }
    // One name, one label set: Prometheus rejects a family whose series disagree on label names.
    const first = family.series[0].labels;
    if (family.type !== type || Object.keys(first).join() !== Object.keys(series.labels).join()) {
      throw new Error(`metric ${name}: every series must be a ${family.type} with labels [${Object.keys(first)}]`);
    }
    family.series.push(series);
  }

  /** Registers a family with prom-client: its collector reads the plain numbers when scraped. */
  private expose(name: string, family: Family): void {
    const { client, registry } = this.prom!;
    const series = family.series;
    const common = {
      name: this.prefix + name,
      help: family.help,
      labelNames: Object.keys(series[0].labels),
      registers: [registry],
    };
    if (family.type === 'counter') {
      new client.Counter({
        ...common,
        collect(this: PromCounter) {
          this.reset();
          for (const s of series) this.inc(s.labels, s.read!());
        },
      });
    } else if (family.type === 'gauge') {
      new client.Gauge({
        ...common,
        collect(this: PromGauge) {
          for (const s of series) this.set(s.labels, s.read!());
        },
      });
    } else {
      // The registry takes any object with prom-client's metric interface; ours only reads numbers when scraped.
      const collector = new HistogramCollector(common.name, family.help, family.buckets!, series);
      registry.registerMetric(collector as unknown as PromHistogram);
    }
  }
}

/** A label value as Prometheus' text format wants it: backslash, quote and newline escaped. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

/**
 * Reports our plain-number histograms to prom-client's registry in the shape its own Histogram reports
 * (`_bucket` series with cumulative counts and `le`, then `_sum` and `_count`), so the registry renders them.
 */
class HistogramCollector {
  readonly type = 'histogram';
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    private readonly series: readonly Series[],
  ) {}

  /** What Registry.metrics() reads: labels of the series apart from `le`, as prom-client's Histogram does. */
  async getForPromString() {
    // `le` is a number, as prom-client's own Histogram gives it (the text format prints it the same).
    const values: {
      labels: Record<string, string | number>;
      sharedLabels: Labels;
      value: number;
      metricName: string;
    }[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, histogram } of this.series) {
      const source = histogram!;
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += source.counts[i];
        values.push({
          labels: { le: this.bounds[i] },
          sharedLabels: labels,
          value: cumulative,
          metricName: bucket,
        });
      }
      values.push(
        { labels: { le: '+Inf' }, sharedLabels: labels, value: source.count, metricName: bucket },
        { labels: {}, sharedLabels: labels, value: source.sum, metricName: `${this.name}_sum` },
        { labels: {}, sharedLabels: labels, value: source.count, metricName: `${this.name}_count` },
      );
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** What Registry.getMetricsAsJSON() reads: the same, labels merged. */
  async get() {
    const data = await this.getForPromString();
    const values = data.values.map(({ labels, sharedLabels, ...v }) => ({
      ...v,
      labels: { ...sharedLabels, ...labels },
    }));
    return { ...data, values };
  }

  /** Registry.resetMetrics(): the numbers belong to the hot path, which keeps counting. */
  reset(): void {}
}
