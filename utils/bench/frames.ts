// npm run bench:frames — CPU per frame of the broker's frame parsers (parse + schema check), in one process, no
// sockets: the part of the hot path that the frame schemas decide. Also what each added piece of per-message
// instrumentation costs: a histogram observation (ours, and prom-client's for comparison) and a clock read.
// Usage: npm run bench:frames [-- --rounds 9 --frames 500000]; pin it (taskset -c 1) for steadier figures.
import { parseArgs } from 'node:util';
import { Histogram as PromHistogram, Registry } from 'prom-client';
import { Histogram, LATENCY_BUCKETS_S } from '../../services/common/metrics.ts';
import { parseBrokerToClientFrame, parseGatewayFrame } from '../../services/protocol/frames.ts';

const { values: args } = parseArgs({
  options: { rounds: { type: 'string', default: '9' }, frames: { type: 'string', default: '500000' } },
});
const rounds = Number(args.rounds);
const n = Number(args.frames);

// The frames bench:broker sends: ~100-byte updates from 100 nodes.
const updates = Array.from(
  { length: 100 },
  (_, i) => `{"type":"update","uid":"gw${i % 2}-node-${i % 50}","endpoint":"temperature","data":"23.4°C@${1e12 + i}"}`,
);
const news = Array.from(
  { length: 100 },
  (_, i) =>
    `{"type":"new","uid":"gw0-node-${i}","protocol":"ws","data":{"temperature":"23.4","led":"0","name":"n${i}"}}`,
);
const values = Array.from({ length: 1000 }, (_, i) => (i % 97) / 50_000);

/** Nanoseconds per call of `fn` over `n` calls, as the median and minimum of `rounds` rounds. */
function measure(fn: (i: number) => unknown): { median: number; min: number } {
  let sink = 0;
  const per: number[] = [];
  for (let r = 0; r < rounds + 2; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) if (fn(i)) sink++;
    if (r >= 2) per.push(Number(process.hrtime.bigint() - t0) / n); // two warm-up rounds
  }
  if (sink < 0) console.log(sink);
  per.sort((a, b) => a - b);
  return { median: per[Math.floor(per.length / 2)], min: per[0] };
}

const ours = new Histogram(LATENCY_BUCKETS_S);
const prom = new PromHistogram({ name: 'x', help: 'x', buckets: [...LATENCY_BUCKETS_S], registers: [new Registry()] });
const cases: Array<[string, (i: number) => unknown]> = [
  ['parseGatewayFrame(update)', (i) => parseGatewayFrame(updates[i % 100]).ok],
  ['parseGatewayFrame(new, 3 resources)', (i) => parseGatewayFrame(news[i % 100]).ok],
  ['parseBrokerToClientFrame(update)', (i) => parseBrokerToClientFrame(updates[i % 100]).ok],
  ['Histogram.observe (ours)', (i) => ours.observe(values[i % 1000])],
  ['prom-client Histogram.observe', (i) => prom.observe(values[i % 1000])],
  ['performance.now()', () => performance.now()],
];
console.log(`# frames benchmark: ${rounds} rounds × ${n} calls, ns per call`);
console.log('| case | median ns | min ns |\n|---|---|---|');
for (const [name, fn] of cases) {
  const { median, min } = measure(fn);
  console.log(`| ${name} | ${median.toFixed(0)} | ${min.toFixed(0)} |`);
}
