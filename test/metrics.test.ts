// The metrics facade (services/common/metrics.ts) on prom-client: a registry per instance, hot-path counters and
// histograms read at scrape time, and the text format Prometheus parses.
import { describe, expect, it } from 'vitest';
import { Metrics } from '../services/common/metrics.ts';

describe('Metrics', () => {
  it('keeps one registry per instance: two services in one process do not see or clash with each other', async () => {
    const a = new Metrics('mycelium_');
    const b = new Metrics('mycelium_');
    a.counter('frames_total', 'frames').inc(3);
    b.counter('frames_total', 'frames').inc(5);
    expect(await a.scrape()).toMatch(/^mycelium_frames_total 3$/m);
    expect(await b.scrape()).toMatch(/^mycelium_frames_total 5$/m);
    expect(await a.scrape()).toMatch(/^mycelium_process_cpu_seconds_total \d/m);
  });

  it('reads counters, families and gauges when scraped, and renders them synchronously for in-process readers', async () => {
    const m = new Metrics('t_', { defaultMetrics: false });
    const inGw = m.counter('in_total', 'frames in', { from: 'gateway' });
    m.counter('in_total', 'frames in', { from: 'client' });
    const rejected = m.counterFamily('rejections_total', 'refusals', 'reason');
    let open = 2;
    m.gauge('connections', 'open', () => open, { kind: 'client' });
    inGw.inc();
    rejected('x"y\\z').inc(2);
    open = 7;
    const text = await m.scrape();
    expect(text).toContain('# TYPE t_in_total counter');
    expect(text).toMatch(/^t_in_total\{from="gateway"\} 1$/m);
    expect(text).toMatch(/^t_in_total\{from="client"\} 0$/m);
    expect(text).toMatch(/^t_rejections_total\{reason="x\\"y\\\\z"\} 2$/m);
    expect(text).toMatch(/^t_connections\{kind="client"\} 7$/m);
    expect(m.render()).toMatch(/^t_rejections_total\{reason="x\\"y\\\\z"\} 2$/m);
    inGw.inc();
    expect(await m.scrape()).toMatch(/^t_in_total\{from="gateway"\} 2$/m);
  });

  it('exposes a histogram as cumulative buckets, +Inf, sum and count, with its fixed labels', async () => {
    const m = new Metrics('t_', { defaultMetrics: false });
    const h = m.histogram('latency_seconds', 'latency', [0.001, 0.01, 0.1], { path: 'gw' });
    for (const v of [0.0005, 0.001, 0.005, 0.05, 3]) h.observe(v);
    const text = await m.scrape();
    expect(text).toContain('# TYPE t_latency_seconds histogram');
    const lines = text.split('\n').filter((l) => l.startsWith('t_latency_seconds'));
    expect(lines).toEqual([
      't_latency_seconds_bucket{le="0.001",path="gw"} 2',
      't_latency_seconds_bucket{le="0.01",path="gw"} 3',
      't_latency_seconds_bucket{le="0.1",path="gw"} 4',
      't_latency_seconds_bucket{le="+Inf",path="gw"} 5',
      't_latency_seconds_sum{path="gw"} 3.0565',
      't_latency_seconds_count{path="gw"} 5',
    ]);
    const json = await (await m.registry()).getMetricsAsJSON();
    expect(json.find((x) => x.name === 't_latency_seconds')?.values[0]).toMatchObject({
      labels: { le: 0.001, path: 'gw' },
    });
  });

  it('loads prom-client at the first scrape and exposes families made before and after it', async () => {
    const m = new Metrics('t_', { defaultMetrics: false });
    m.counter('before_total', 'made before the first scrape').inc();
    expect(await m.scrape()).toMatch(/^t_before_total 1$/m);
    m.counter('after_total', 'made after it').inc(2);
    m.histogram('after_seconds', 'made after it', [1]).observe(0.5);
    const text = await m.scrape();
    expect(text).toMatch(/^t_after_total 2$/m);
    expect(text).toMatch(/^t_after_seconds_bucket\{le="1"\} 1$/m);
  });

  it('refuses a series whose labels differ from its family (Prometheus would reject the scrape)', () => {
    const m = new Metrics('t_', { defaultMetrics: false });
    m.counter('x_total', 'x', { a: '1' });
    expect(() => m.counter('x_total', 'x', { b: '1' })).toThrow(/labels \[a\]/);
    expect(() => m.gauge('x_total', 'x', () => 1, { a: '2' })).toThrow(/must be a counter/);
  });
});
