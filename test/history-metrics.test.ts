// The history service's own HTTP endpoint (--http-port): GET /healthz says whether the store takes batches,
// GET /metrics (viewer token unless --public-metrics) counts what was stored and times batches and queries.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../services/bus/index.ts';
import { subjects } from '../services/bus/subjects.ts';
import { resolveConfig } from '../services/common/config.ts';
import { silentLogger } from '../services/common/log.ts';
import type { Component } from '../services/common/run.ts';
import { historyCommand } from '../services/history/command.ts';
import { makeKeys } from './helpers/keys.ts';
import { waitFor } from './helpers/wait.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function startHistoryCommand(extra: string[] = []) {
  const keys = makeKeys();
  const dir = mkdtempSync(join(tmpdir(), 'myc-history-metrics-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const bus = createBus({});
  await bus.start();
  cleanups.push(() => bus.stop());
  const argv = ['--db', `sqlite:${join(dir, 'h.db')}`, '--http-port', '0', '--key-file', keys.keyFile, ...extra];
  const config = resolveConfig(historyCommand.options, argv, {});
  const component = (await historyCommand.build(config as never, silentLogger(), { bus })) as Component & {
    httpPort?: number;
  };
  await component.start();
  cleanups.push(() => component.stop());
  const base = `http://127.0.0.1:${component.httpPort}`;
  return { keys, bus, base };
}

describe('mycelium history --http-port', () => {
  it('answers /healthz without a token and /metrics only with a viewer token', async () => {
    const { keys, bus, base } = await startHistoryCommand();
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', down: [], store: 'sqlite', bus: 'memory' });

    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    const gatewayToken = await keys.token('gateway');
    expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${gatewayToken}` } })).status).toBe(401);

    // Three values on the bus: the counter and the batch histogram move.
    const at = Date.now();
    for (let i = 0; i < 3; i++) {
      const update = { type: 'update', uid: 'm1', endpoint: 'temperature', data: 20 + i, at: at + i };
      bus.publish(subjects.events('b1'), Buffer.from(JSON.stringify(update)));
    }
    const viewer = await keys.token('viewer');
    const text = await waitFor(
      async () => {
        const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${viewer}` } });
        const body = await res.text();
        return res.status === 200 && /^mycelium_history_values_stored_total 3$/m.test(body) ? body : undefined;
      },
      'values_stored_total 3',
      15_000,
    );
    expect(text).toMatch(/^# TYPE mycelium_history_values_stored_total counter$/m);
    expect(text).toMatch(/^mycelium_history_batch_duration_seconds_count [1-9]\d*$/m);
    expect(text).toMatch(/^mycelium_history_dropped_total 0$/m);
    // prom-client's process metrics come with it.
    expect(text).toMatch(/^mycelium_history_process_cpu_seconds_total /m);

    // A query through the bus is timed.
    const reply = await bus.request(
      subjects.historyQuery,
      Buffer.from(
        JSON.stringify({ op: 'points', uid: 'm1', resource: 'temperature', from: at - 1000, to: at + 1000, limit: 10 }),
      ),
      5_000,
    );
    expect(JSON.parse(Buffer.from(reply.data).toString())).toMatchObject({ points: expect.any(Array) });
    const after = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${viewer}` } })).text();
    expect(after).toMatch(/^mycelium_history_query_duration_seconds_count [1-9]\d*$/m);
  });

  it('serves /metrics without a token with --public-metrics, and 404s anything else', async () => {
    const { base } = await startHistoryCommand(['--public-metrics']);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect((await fetch(`${base}/api/v1/nodes`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(404);
  });
});
