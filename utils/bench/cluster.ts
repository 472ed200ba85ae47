// npm run bench:cluster — two brokers on one NATS server (gateways on the first, web clients on the second)
// against one broker on the in-process bus, in the same run and with the same load as bench:broker.
// Usage: npm run bench:cluster [-- --reps 3 --seconds 4 --quick]
import { parseArgs } from 'node:util';
import { type Case, fixedRate, maxThroughput, pinSelf, runCases } from './fanout-load.ts';

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '4' },
    quick: { type: 'boolean', default: false },
  },
});
const reps = args.quick ? 1 : Number(args.reps);
const seconds = Number(args.seconds);

const cases: Case[] = [
  { name: 'max K=10', run: (s) => maxThroughput(s, 10, seconds) },
  { name: 'max K=100', run: (s) => maxThroughput(s, 100, seconds) },
  { name: '1000/s × K=100', run: (s) => fixedRate(s, 100, 1000, seconds) },
  { name: '5000/s × K=10', run: (s) => fixedRate(s, 10, 5000, seconds) },
];

pinSelf();
console.log(
  `# cluster benchmark: ${reps} reps × ${seconds}s per case, medians; both brokers and nats-server on CPU 0, load on CPU 1`,
);
await runCases(cases, ['memory', 'cluster'], reps);
process.exit(0);
