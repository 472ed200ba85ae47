// The rules service's own HTTP endpoint (`mycelium rules --http-port`): GET /healthz says whether it runs and how
// many rules are in each state; GET /metrics (viewer token unless --public-metrics) has the per-rule runs by
// outcome and the duration histogram that the REST API's counts and p50/p99 come from.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../services/bus/index.ts';
import { subjects } from '../services/bus/subjects.ts';
import { resolveConfig } from '../services/common/config.ts';
import { silentLogger } from '../services/common/log.ts';
import type { Component } from '../services/common/run.ts';
import { rulesCommand } from '../services/rules/command.ts';
import { makeKeys } from './helpers/keys.ts';
import { tempDir } from './helpers/rules.ts';
import { waitFor } from './helpers/wait.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function startRulesCommand(extra: string[] = []) {
  const keys = makeKeys();
  const dir = tempDir(cleanup, 'rules-metrics-');
  const stateDir = tempDir(cleanup, 'rules-metrics-state-');
  writeFileSync(
    join(dir, 'count.js'),
    `export default { name: 'count', on: { update: { node: 'm*', resource: 'temperature' } }, run() {} };`,
  );
  writeFileSync(
    join(dir, 'fails.js'),
    `export default { name: 'fails', on: { update: { node: 'm*', resource: 'temperature' } },
      run() { throw new Error('boom'); } };`,
  );
  const bus = createBus({});
  await bus.start();
  cleanup(() => bus.stop());
  const argv = [
    '--dir',
    dir,
    '--state-dir',
    stateDir,
    '--state-sync-ms',
    '0',
    '--max-failures',
    '100',
    '--http-port',
    '0',
    '--key-file',
    keys.keyFile,
    ...extra,
  ];
  const config = resolveConfig(rulesCommand.options, argv, {});
  const component = (await rulesCommand.build(config as never, silentLogger(), { bus })) as Component & {
    httpPort?: number;
  };
  await component.start();
  cleanup(() => component.stop());
  return { keys, bus, base: `http://127.0.0.1:${component.httpPort}` };
}

describe('mycelium rules --http-port', () => {
  it('answers /healthz without a token and /metrics with the per-rule runs, errors and durations', async () => {
    const { keys, bus, base } = await startRulesCommand();
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({
      status: 'ok',
      down: [],
      bus: 'memory',
      rules: { running: 2, disabled: 0, failed: 0, loading: 0 },
    });

    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    const nodeToken = await keys.token('node', 'm1');
    expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${nodeToken}` } })).status).toBe(401);

    for (let i = 0; i < 3; i++) {
      const update = { type: 'update', uid: 'm1', endpoint: 'temperature', data: 20 + i, at: Date.now() };
      bus.publish(subjects.events('b1'), Buffer.from(JSON.stringify(update)));
    }
    const viewer = await keys.token('viewer');
    const text = await waitFor(
      async () => {
        const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${viewer}` } });
        const body = await res.text();
        return res.status === 200 &&
          /^mycelium_rules_rule_runs_total\{rule="count",status="ok"\} 3$/m.test(body) &&
          /^mycelium_rules_rule_runs_total\{rule="fails",status="error"\} 3$/m.test(body)
          ? body
          : undefined;
      },
      'three ok runs of count and three errors of fails',
      15_000,
    );
    expect(text).toMatch(/^# TYPE mycelium_rules_rule_runs_total counter$/m);
    expect(text).toMatch(/^# TYPE mycelium_rules_rule_duration_seconds histogram$/m);
    expect(text).toMatch(/^mycelium_rules_rule_duration_seconds_count\{rule="count"\} 3$/m);
    expect(text).toMatch(/^mycelium_rules_rule_duration_seconds_bucket\{le="\+Inf",rule="fails"\} 3$/m);
    expect(text).toMatch(/^mycelium_rules_rules\{status="running"\} 2$/m);
  });

  it('serves /metrics without a token with --public-metrics, 404s anything else, and is off with -1', async () => {
    const { base } = await startRulesCommand(['--public-metrics']);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect((await fetch(`${base}/api/v1/rules`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(404);

    const config = resolveConfig(rulesCommand.options, ['--http-port=-1', '--dir', '.'], {});
    const off = (await rulesCommand.build(config as never, silentLogger(), { bus: createBus({}) })) as Component & {
      httpPort?: number;
    };
    expect(off.httpPort).toBeUndefined();
  });
});
