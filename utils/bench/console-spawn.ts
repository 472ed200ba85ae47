// The floor under `bench:console`'s real-agent echo: the same open-loop rate of `echo` processes, without the
// console. `plain` is node's spawn and nothing else; `runner` is the agent's Runner (services/agent/runner.ts:
// its own process group, pipes, caps). When `plain` is already far above the console's goal, the cost is process
// creation on this machine, not the console's path (docs/console.md, "Throughput of one agent").
//   node --import tsx utils/bench/console-spawn.ts [rate=50] [seconds=6]
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { Runner } from '../../services/agent/runner.ts';
import { percentile } from './proc.ts';

const rate = Number(process.argv[2] ?? 50);
const seconds = Number(process.argv[3] ?? 6);

/** Starts `echo n <i>` and calls `done` when it has closed (exit and pipes); false when refused (busy). */
type Starter = (i: number, done: () => void) => boolean;

const plain: Starter = (i, done) => {
  const child = spawn('echo', ['n', String(i)], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.resume();
  child.stderr?.resume();
  child.once('close', done);
  return true;
};

const runner = new Runner({ maxConcurrent: 64 });
const viaRunner: Starter = (i, done) =>
  runner.start({ id: `e${i}`, argv: ['echo', 'n', String(i)], mode: 'output' }, { output() {}, exit: done }) !== 'busy';

async function measure(name: string, start: Starter): Promise<string> {
  const total = rate * seconds;
  const latencies: number[] = [];
  let refused = 0;
  let settled = 0;
  // The largest gap between two ticks of a 10 ms interval: how long the event loop was blocked at worst.
  let lastTick = performance.now();
  let maxLag = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    maxLag = Math.max(maxLag, now - lastTick - 10);
    lastTick = now;
  }, 10);
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const settle = () => {
      if (++settled === total) resolve();
    };
    for (let i = 0; i < total; i++) {
      setTimeout(
        () => {
          const at = performance.now();
          const ok = start(i, () => {
            latencies.push(performance.now() - at);
            settle();
          });
          if (!ok) {
            refused++;
            settle();
          }
        },
        (i * 1000) / rate,
      );
    }
  });
  clearInterval(ticker);
  latencies.sort((a, b) => a - b);
  const wall = (performance.now() - t0) / 1000;
  return `  ${name.padEnd(7)} ${rate}/s for ${seconds}s: spawn to close p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms; ${latencies.length} done, ${refused} busy, in ${wall.toFixed(1)} s; event loop blocked up to ${maxLag.toFixed(0)} ms`;
}

const load = loadavg()
  .map((l) => l.toFixed(1))
  .join(', ');
const lines = [await measure('plain', plain), await measure('runner', viaRunner)];
process.stdout.write(
  `console-spawn (load average at start ${load}; at end ${loadavg()[0].toFixed(1)})\n${lines.join('\n')}\n`,
);
