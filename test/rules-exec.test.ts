// ctx.exec on a real `mycelium agent` through execOnNode (services/rules/exec-binding.ts).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { startAgent, writeCommandsFile } from './helpers/agent.ts';
import { startBroker } from './helpers/broker.ts';
import { startRules, tempDir } from './helpers/rules.ts';
import { waitFor } from './helpers/wait.ts';
import { nodeUrl, startWsGateway } from './helpers/ws-gateway.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('ctx.exec runs a console command on a real agent through execOnNode', async () => {
  const bus = new MemoryBus();
  await bus.start();
  cleanup(() => bus.stop());
  const tb = await startBroker({}, undefined, bus);
  cleanup(() => tb.stop());
  const gw = await startWsGateway(tb, cleanup);
  const dir = tempDir(cleanup);
  const agent = startAgent([
    '--gateway-url',
    nodeUrl(gw),
    '--token',
    await tb.keys.token('node', 'agent-1'),
    '--commands',
    writeCommandsFile(dir),
  ]);
  cleanup(() => agent.stop());
  await waitFor(() => tb.broker.table.get('agent-1')?.resources.console !== undefined, 'console', 20_000);
  const rules = tempDir(cleanup);
  writeFileSync(
    join(rules, 'ex.js'),
    `export default { name: 'ex', on: { schedule: { every: '1s' } }, async run(e, ctx) {
    const r = await ctx.exec('agent-1', 'echo', { text: 'from a rule' }); ctx.state.set('r', r);
    const bad = await ctx.exec('agent-1', 'rm', {}); ctx.state.set('bad', bad); } };`,
  );
  const service = await startRules(bus, cleanup, rules);
  const rec = await waitFor(() => (service.records()[0]?.runs ? service.records()[0] : undefined), 'a run', 20_000);
  expect(rec.lastRun).toMatchObject({ status: 'ok', trigger: 'schedule' });
  const { readFileSync } = await import('node:fs');
  await waitFor(() => {
    try {
      return JSON.parse(readFileSync(join(service.options.stateDir, 'ex.json'), 'utf8')).bad;
    } catch {
      return undefined;
    }
  }, 'state');
  const st = JSON.parse(readFileSync(join(service.options.stateDir, 'ex.json'), 'utf8'));

  expect(st.r).toMatchObject({ status: 'ok', code: 0, output: 'from a rule\n', truncated: false });
  expect(st.bad.status).toBe('refused');
}, 60_000);
