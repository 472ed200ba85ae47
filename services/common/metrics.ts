// Prometheus metrics for one service instance, on a prom-client Registry of its own (several services share a
// process under `mycelium up` and in tests, so never prom-client's global registry).
//
// The hot path never calls prom-client: a counter is a plain number bumped per message and a histogram a few
// plain numbers (prom-client's observe() costs ~0.4 µs with its label hashing, ten times ours; measured in
// docs/benchmarks.md). Both are read when Prometheus scrapes, through prom-client collectors, which also
// render the text format and add the process metrics and event-loop lag (collectDefaultMetrics).
import {
  collectDefaultMetrics,
  Counter as PromCounter,
  Gauge as PromGauge,
  type Histogram as PromHistogram,
  Registry,
} from 'prom-client';

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

interface Series<T> {
  labels: Labels;
  source: T;
}

interface Family {
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  series: Series<() => number>[] | Series<Histogram>[];
}

export interface MetricsOptions {
  /** Process metrics (CPU, memory, handles, GC) and event-loop lag; on by default. */
  defaultMetrics?: boolean;
}

export class Metrics {
  /** The prom-client registry: GET /metrics renders it (scrape()); more prom-client metrics may be added. */
  readonly registry = new Registry();
  private readonly families = new Map<string, Family>();

  constructor(
    private readonly prefix = 'mycelium_',
    options: MetricsOptions = {},
  ) {
    if (options.defaultMetrics ?? true) {
      // Event-loop lag is sampled by Node's monitorEventLoopDelay every 10 ms; it reports mean, percentiles, max.
      collectDefaultMetrics({ register: this.registry, prefix, eventLoopMonitoringPrecision: 10 });
    }
  }

  counter(name: string, help: string, labels: Labels = {}): Counter {
    const c = new Counter();
    this.readings(name, help, 'counter', labels, () => c.value);
    return c;
  }

  gauge(name: string, help: string, read: () => number, labels: Labels = {}): void {
    this.readings(name, help, 'gauge', labels, read);
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
    const h = new Histogram(buckets);
    const family = this.family(name, help, 'histogram', labels, (created) => {
      const collector = new HistogramCollector(
        this.prefix + name,
        help,
        buckets,
        created.series as Series<Histogram>[],
      );
      // The registry takes any object with prom-client's metric interface; ours only reads numbers when scraped.
      this.registry.registerMetric(collector as unknown as PromHistogram);
    });
    (family.series as Series<Histogram>[]).push({ labels, source: h });
    return h;
  }

  /** The Prometheus text exposition (format 0.0.4) of everything in the registry: what GET /metrics serves. */
  scrape(): Promise<string> {
    return this.registry.metrics();
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
      for (const s of f.series as Series<() => number>[]) {
        lines.push(`${this.prefix}${name}${labelText(s.labels)} ${s.source()}`);
      }
    }
    return `${lines.join('\n')}\n`;
  }

  private readings(name: string, help: string, type: 'counter' | 'gauge', labels: Labels, read: () => number): void {
    const family = this.family(name, help, type, labels, (created) => {
      const series = created.series as Series<() => number>[];
      const common = { name: this.prefix + name, help, labelNames: Object.keys(labels), registers: [this.registry] };
      // Read at scrape time: the hot path only bumped a number.
      if (type === 'counter') {
        new PromCounter({
          ...common,
          collect(this: PromCounter) {
            this.reset();
            for (const s of series) this.inc(s.labels, s.source());
          },
        });
      } else {
        new PromGauge({
          ...common,
          collect(this: PromGauge) {
            for (const s of series) this.set(s.labels, s.source());
          },
        });
      }
    });
    (family.series as Series<() => number>[]).push({ labels, source: read });
  }

  private family(
    name: string,
    help: string,
    type: Family['type'],
    labels: Labels,
    create: (family: Family) => void,
  ): Family {
    let family = this.families.get(name);
    if (family === undefined) {
      family = { help, type, series: [] };
      this.families.set(name, family);
      create(family);
      return family;
    }
    // One name, one label set: Prometheus rejects a family whose series disagree on label names.
    const first = family.series[0]?.labels ?? {};
    if (family.type !== type || Object.keys(first).join() !== Object.keys(labels).join()) {
      throw new Error(`metric ${name}: every series must be a ${family.type} with labels [${Object.keys(first)}]`);
    }
    return family;
  }
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(
    ([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`,
  );
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
    private readonly series: readonly Series<Histogram>[],
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
    for (const { labels, source } of this.series) {
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
