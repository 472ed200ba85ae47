// The rules REST API with two rules workers on a real nats-server (issue 14, scale-out): GET sums every worker's
// counts, enable/disable reach both and survive a worker restarting (or being down during the change), and a
// saved source is applied on both even when each worker has a folder of its own.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Bus } from '../services/bus/bus.ts';
import { createBus } from '../services/bus/index.ts';
import { subjects } from '../services/bus/subjects.ts';
import { mergeRules } from '../services/rules/merge.ts';
import { type RuleRecord, rulesSubjects, type WorkerRuleRecord } from '../services/rules/protocol.ts';
import type { RulesService } from '../services/rules/service.ts';
import { startBroker } from './helpers/broker.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { startRules, tempDir } from './helpers/rules.ts';
import { waitFor } from './helpers/wait.ts';

const NODES = 20;
const VALUES = 5;
/** Two workers joining, a state sync and rule loads on a loaded machine. */
const SLOW_MS = 20_000;

let nats: NatsServer;
beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true });
});
afterAll(async () => {
  await nats?.stop();
});
const cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const rule = (name: string, description: string) =>
  `export default { name: '${name}', description: '${description}', on: { update: { node: 'n-*', resource: 'temperature' } }, run() {} };\n`;

async function natsBus(name: string): Promise<Bus> {
  const bus = createBus({ natsUrl: nats.url, name });
  await bus.start();
  cleanup(() => bus.stop());
  return bus;
}

/** A worker with a rules folder of its own (nothing shared on disk but what the bus carries). */
async function worker(id: string, dir: string, stateDir: string): Promise<RulesService> {
  const bus = await natsBus(`rules-${id}`);
  const service = await startRules(bus, cleanup, dir, { id, stateDir, stateSyncMs: 300, heartbeatMs: 200 });
  return service;
}

function record(s: RulesService, name: string): RuleRecord | undefined {
  return s.records().find((r) => r.name === name);
}

describe('rules REST API with two workers on NATS', () => {
  it('GET sums both workers; disable, enable and a saved source reach both and survive a restart', async () => {
    const brokerBus = await natsBus('rules-workers-broker');
    const tb = await startBroker({}, undefined, brokerBus);
    cleanup(() => tb.stop());
    const events = await natsBus('rules-workers-events');
    const dirA = tempDir(cleanup, 'rules-a-');
    const dirB = tempDir(cleanup, 'rules-b-');
    for (const dir of [dirA, dirB]) {
      writeFileSync(join(dir, 'seq.js'), rule('seq', 'v1'));
      writeFileSync(join(dir, 'ctl.js'), rule('ctl', 'control'));
    }
    const stateB = tempDir(cleanup, 'rules-state-b-');
    const a = await worker('wa', dirA, tempDir(cleanup, 'rules-state-a-'));
    let b = await worker('wb', dirB, stateB);
    await waitFor(() => a.membership.live.length === 2 && b.membership.live.length === 2, 'both see both', SLOW_MS);

    const admin = await tb.keys.token('admin');
    const viewer = await tb.keys.token('viewer');
    const call = async (method: string, path: string, token: string, body?: string) => {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (body !== undefined) headers['content-type'] = 'text/plain';
      const res = await fetch(`${tb.http}/api/v1${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
      return { status: res.status, body: (await res.json()) as RuleRecord & RuleRecord[] };
    };
    const getRule = async (name: string) => (await call('GET', `/rules/${name}`, viewer)).body;
    let sent = 0;
    const send = (values: number) => {
      for (let v = 0; v < values; v++) {
        for (let i = 0; i < NODES; i++) {
          const update = { type: 'update', uid: `n-${i}`, endpoint: 'temperature', data: v, at: Date.now() };
          events.publish(subjects.events('sim'), Buffer.from(JSON.stringify(update)));
        }
      }
      sent += values * NODES;
    };

    // Nodes hashed to both workers; GET reports the sum, equal to every event sent.
    const uids = Array.from({ length: NODES }, (_, i) => `n-${i}`);
    expect(uids.some((u) => a.membership.owns(u))).toBe(true);
    expect(uids.some((u) => b.membership.owns(u))).toBe(true);
    send(VALUES);
    await waitFor(async () => (await getRule('seq')).runs === sent, `GET /rules/seq runs = ${sent}`, SLOW_MS);
    const one = await getRule('seq');
    expect(record(a, 'seq')?.runs).toBeGreaterThan(0);
    expect(record(b, 'seq')?.runs).toBeGreaterThan(0);
    expect(one).toMatchObject({
      name: 'seq',
      status: 'running',
      worker: 'wa,wb',
      workers: { answered: ['wa', 'wb'], expected: ['wa', 'wb'], missing: [] },
      percentiles: 'histogram',
      byWorker: [
        { worker: 'wa', runs: record(a, 'seq')?.runs },
        { worker: 'wb', runs: record(b, 'seq')?.runs },
      ],
    });
    expect(one.p99Ms).toBeGreaterThan(0);
    const ats = one.recent.map((r) => r.at);
    expect(ats).toEqual([...ats].sort((x, y) => y - x));
    const union = [...(record(a, 'seq')?.recent ?? []), ...(record(b, 'seq')?.recent ?? [])].map((r) => r.at);
    expect(ats).toEqual(union.sort((x, y) => y - x).slice(0, 20));
    for (const r of one.recent) expect(['wa', 'wb']).toContain(r.worker);
    expect(one.lastRun?.at).toBe(Math.max(record(a, 'seq')?.lastRun?.at ?? 0, record(b, 'seq')?.lastRun?.at ?? 0));
    const list = (await call('GET', '/rules', viewer)).body;
    expect(list.map((r) => [r.name, r.runs])).toEqual([
      ['ctl', sent],
      ['seq', sent],
    ]);

    // Disable through REST: both workers stop running it (ctl, on the same events, shows they were heard).
    expect((await call('POST', '/rules/seq/disable', admin)).status).toBe(200);
    await waitFor(
      () => record(a, 'seq')?.status === 'disabled' && record(b, 'seq')?.status === 'disabled',
      'seq disabled on both',
    );
    const seqRuns = (await getRule('seq')).runs;
    send(1);
    await waitFor(async () => (await getRule('ctl')).runs === sent, 'ctl ran the new events', SLOW_MS);
    expect(await getRule('seq')).toMatchObject({ status: 'disabled', runs: seqRuns });

    // b restarts (its own --state-dir): seq stays disabled.
    await b.stop();
    b = await worker('wb', dirB, stateB);
    expect(record(b, 'seq')?.status).toBe('disabled');

    // b is down while an admin enables seq; when b comes back, it adopts a's list and runs seq.
    await b.stop();
    await waitFor(() => a.membership.live.length === 1, 'a alone', SLOW_MS);
    expect(await call('POST', '/rules/seq/enable', admin)).toMatchObject({ status: 200, body: { status: 'running' } });
    b = await worker('wb', dirB, stateB);
    expect(record(b, 'seq')?.status).toBe('running');
    await waitFor(() => a.membership.live.length === 2 && b.membership.live.length === 2, 'both again', SLOW_MS);
    await waitFor(async () => (await getRule('seq')).status === 'running', 'GET: seq running on both');

    // A saved source reaches both folders and runs on both.
    const saved = await call('PUT', '/rules/seq/source', admin, rule('seq', 'v2'));
    expect(saved).toMatchObject({ status: 200, body: { description: 'v2' } });
    await waitFor(
      () => record(a, 'seq')?.description === 'v2' && record(b, 'seq')?.description === 'v2',
      'v2 loaded on both',
      SLOW_MS,
    );
    expect(readFileSync(join(dirA, 'seq.js'), 'utf8')).toBe(rule('seq', 'v2'));
    expect(readFileSync(join(dirB, 'seq.js'), 'utf8')).toBe(rule('seq', 'v2'));
    expect(await getRule('seq')).toMatchObject({ description: 'v2', status: 'running' });
  }, 90_000);

  it('a worker that does not answer is named in workers.missing, and GET does not wait for it', async () => {
    const brokerBus = await natsBus('rules-workers-broker-2');
    const tb = await startBroker({}, undefined, brokerBus);
    cleanup(() => tb.stop());
    const dir = tempDir(cleanup);
    writeFileSync(join(dir, 'seq.js'), rule('seq', 'v1'));
    const a = await worker('wa', dir, tempDir(cleanup, 'rules-state-a-'));
    // A worker that announces itself but answers nothing (hung, or cut off from the API subjects).
    const ghost = await natsBus('rules-ghost');
    const beat = setInterval(() => ghost.publish(rulesSubjects.alive, Buffer.from('{"id":"ghost"}')), 100);
    cleanup(() => clearInterval(beat));
    await waitFor(() => a.membership.live.length === 2, 'a sees the ghost', SLOW_MS);
    const viewer = await tb.keys.token('viewer');
    const started = Date.now();
    const res = await fetch(`${tb.http}/api/v1/rules`, { headers: { authorization: `Bearer ${viewer}` } });
    const elapsed = Date.now() - started;
    expect(res.status).toBe(200);
    const [seq] = (await res.json()) as RuleRecord[];
    expect(seq).toMatchObject({
      name: 'seq',
      worker: 'wa',
      workers: { answered: ['wa'], expected: ['ghost', 'wa'], missing: ['ghost'] },
    });
    // The ghost has no subscriber: NATS says "no responders" at once, well before the gather window.
    expect(elapsed).toBeLessThan(5000);

    // Attacks on myc.rules.changed: a file outside the folder, a hidden one, a source whose hash does not match,
    // a name that is not a rule name: each ignored. A good change published after them shows they were handled.
    const before = readFileSync(join(dir, 'seq.js'), 'utf8');
    const evil = 'export default { name: "seq", on: { new: { node: "*" } }, run() {} };';
    const changed = (body: object) => ghost.publish(rulesSubjects.changed, Buffer.from(JSON.stringify(body)));
    const hash = createHash('sha256').update(evil).digest('hex');
    changed({ from: 'ghost', file: '../escape.js', source: evil, hash });
    changed({ from: 'ghost', file: '.hidden.js', source: evil, hash });
    changed({ from: 'ghost', file: 'seq.js', source: evil, hash: 'f'.repeat(64) });
    changed({ from: 'ghost', name: '__proto__', disabled: 'x' });
    changed({ from: 'ghost', name: 'seq', disabled: 'disabled by ghost' });
    await waitFor(() => record(a, 'seq')?.status === 'disabled', 'the good change applied');
    expect(readFileSync(join(dir, 'seq.js'), 'utf8')).toBe(before);
    expect(existsSync(join(dir, '..', 'escape.js'))).toBe(false);
    expect(existsSync(join(dir, '.hidden.js'))).toBe(false);
    expect(a.records().map((r) => r.name)).toEqual(['seq']);
  }, 60_000);
});

describe('merging workers’ records', () => {
  const base = (worker: string, over: Partial<WorkerRuleRecord>): WorkerRuleRecord => ({
    name: 'r',
    file: 'r.js',
    status: 'running',
    triggers: [],
    timeLimitMs: 100,
    runs: 0,
    errors: 0,
    skipped: 0,
    dropped: 0,
    restarts: 0,
    consecutiveFailures: 0,
    recent: [],
    worker,
    ...over,
  });
  const seen = { answered: ['wa', 'wb'], expected: ['wa', 'wb', 'wc'] };

  it('sums histograms; takes the worst status with its worker; names the missing one', () => {
    const [m] = mergeRules(
      [
        [base('wa', { runs: 98, buckets: { boundsMs: [1, 10], counts: [98, 0, 0] } })],
        [
          base('wb', {
            runs: 2,
            status: 'disabled',
            reason: 'disabled by x',
            buckets: { boundsMs: [1, 10], counts: [0, 2, 0] },
          }),
        ],
      ],
      seen,
    );
    expect(m).toMatchObject({
      runs: 100,
      status: 'disabled',
      reason: 'disabled by x (on wb)',
      p50Ms: 1,
      p99Ms: 10,
      percentiles: 'histogram',
      workers: { missing: ['wc'] },
    });
  });

  it('histograms with other bounds: the largest p99 of the workers, labelled', () => {
    const [m] = mergeRules(
      [
        [base('wa', { runs: 1, p50Ms: 1, p99Ms: 2, buckets: { boundsMs: [1, 10], counts: [1, 0, 0] } })],
        [base('wb', { runs: 1, p50Ms: 5, p99Ms: 50, buckets: { boundsMs: [5, 50], counts: [0, 1, 0] } })],
      ],
      seen,
    );
    expect(m).toMatchObject({ p50Ms: 5, p99Ms: 50, percentiles: 'max-of-workers' });
  });
});
