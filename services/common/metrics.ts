// Counters and gauges in Prometheus text format (exposition format 0.0.4).
// Counters are plain numbers bumped on the hot path; labels are fixed when a counter is created.

type Labels = Record<string, string>;

interface Series {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  values: Map<string, { labels: Labels; value: number; read?: () => number }>;
}

export class Counter {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

export class Metrics {
  private series = new Map<string, Series>();

  constructor(private readonly prefix = 'mycelium_') {}

  counter(name: string, help: string, labels: Labels = {}): Counter {
    const c = new Counter();
    this.entry(name, help, 'counter', labels, () => c.value);
    return c;
  }

  gauge(name: string, help: string, read: () => number, labels: Labels = {}): void {
    this.entry(name, help, 'gauge', labels, read);
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

  render(): string {
    const lines: string[] = [];
    for (const s of this.series.values()) {
      lines.push(`# HELP ${this.prefix}${s.name} ${s.help}`, `# TYPE ${this.prefix}${s.name} ${s.type}`);
      for (const v of s.values.values()) {
        const labels = Object.entries(v.labels)
          .map(([k, val]) => `${k}="${val.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
          .join(',');
        lines.push(`${this.prefix}${s.name}${labels ? `{${labels}}` : ''} ${v.read ? v.read() : v.value}`);
      }
    }
    return `${lines.join('\n')}\n`;
  }

  private entry(name: string, help: string, type: 'counter' | 'gauge', labels: Labels, read: () => number): void {
    let s = this.series.get(name);
    if (s === undefined) {
      s = { name, help, type, values: new Map() };
      this.series.set(name, s);
    }
    s.values.set(JSON.stringify(labels), { labels, value: 0, read });
  }
}
