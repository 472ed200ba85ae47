// npm run bench — every benchmark in turn, each in its own process (they pin CPUs and start servers).
import { spawnSync } from 'node:child_process';

const benches = ['bench:broker', 'bench:cluster', 'bench:ws-gateway', 'bench:coap', 'bench:mqtt', 'bench:dashboard'];
let failed = 0;
for (const name of benches) {
  console.log(`\n=== npm run ${name}`);
  const r = spawnSync('npm', ['run', '--silent', name], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed > 0 ? 1 : 0);
