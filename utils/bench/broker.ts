// npm run bench:broker — the broker's fan-out under load, beside a bare ws relay (the practical ceiling).
// 2 gateway connections with 50 nodes each push ~100-byte `update` frames; K web clients receive every one.
//   (a) max sustained delivered messages/s, closed loop that respects backpressure;
//   (b) end-to-end latency p50/p99 at fixed offered rates;
//   (c) server CPU time per delivered message and peak RSS, from /proc.
// The server under test is pinned to CPU 0 and this load generator to CPU 1 (taskset); every case runs
// REPS times on a fresh server process and the median is reported.
// Usage: npm run bench:broker [-- --reps 3 --seconds 4 --servers relay,memory,nats --quick]
import { parseArgs } from 'node:util';
import { type Case, fixedRate, maxThroughput, pinSelf, runCases, type ServerKind } from './fanout-load.ts';

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '4' },
    servers: { type: 'string', default: 'relay,memory,nats' },
    quick: { type: 'boolean', default: false },
    /** Only the cases whose name contains this text, e.g. --cases "K=1". */
    cases: { type: 'string', default: '' },
  },
});
const reps = args.quick ? 1 : Number(args.reps);
const seconds = Number(args.seconds);

const cases: Case[] = [
  ...[1, 10, 100].map((k) => ({ name: `max K=${k}`, run: (s) => maxThroughput(s, k, seconds) }) satisfies Case),
  // [accounts] The same closed loop with two organisations: each event goes to its org's half of the clients. The
  // `1 org` cases deliver each event to as many clients (K/2, no organisations): the fair baseline per message.
  ...[5, 50].map((k) => ({ name: `max K=${k} 1 org`, run: (s) => maxThroughput(s, k, seconds) }) satisfies Case),
  ...[10, 100].map(
    (k) => ({ name: `max K=${k} 2 orgs`, run: (s) => maxThroughput(s, k, seconds, true) }) satisfies Case,
  ),
  ...[
    [1000, 10],
    [1000, 100],
    [5000, 10],
    [5000, 100],
  ].map(([rate, k]) => ({ name: `${rate}/s × K=${k}`, run: (s) => fixedRate(s, k, rate, seconds) }) satisfies Case),
];

pinSelf();
console.log(
  `# broker benchmark: ${reps} reps × ${seconds}s per case, medians; servers on CPU 0, load generator on CPU 1`,
);
await runCases(
  cases.filter((c) => c.name.includes(args.cases)),
  args.servers.split(',') as ServerKind[],
  reps,
);
process.exit(0);
