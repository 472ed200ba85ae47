// The rule runner against real worker threads: limits (time, memory), crashes, ordering, state. Attack files
// (a loop, a throw, 1 GB, process.exit, reading a file outside) are real rule files compiled by the loader.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileRule } from '../services/rules/loader.ts';
import type { RuleEvent } from '../services/rules/rule.ts';
import { BLOCKED_GRACE_MS, type RuleHost, RulePool, type RunnerLimits, RuleWorker } from '../services/rules/runner.ts';
import { waitFor } from './helpers/wait.ts';

const dir = mkdtempSync(join(tmpdir(), 'rules-runner-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const LIMITS: RunnerLimits = {
  timeLimitMs: 100,
  maxTimeLimitMs: 1000,
  memoryMb: 64,
  maxWaitMs: 5000,
  loadTimeoutMs: 10_000,
  concurrency: 8,
  maxQueued: 1000,
};

const pool = new RulePool();
const workers: RuleWorker[] = [];
afterAll(async () => {
  for (const w of workers) await w.stop();
});

interface TestHost extends RuleHost {
  logs: Array<{ level: string; message: string }>;
  saved: Record<string, unknown>;
}

function host(calls: (op: string, args: unknown[]) => Promise<unknown> = async () => null): TestHost {
  const h: TestHost = {
    logs: [],
    saved: {},
    call: calls,
    log: (level, message) => h.logs.push({ level, message }),
    saveState: (key, value) => {
      if (value === undefined) delete h.saved[key];
      else h.saved[key] = value;
    },
    state: () => ({ ...h.saved }),
  };
  return h;
}

async function ruleWorker(name: string, source: string, h = host(), limits: Partial<RunnerLimits> = {}, inPool = pool) {
  const file = join(dir, `${name}.ts`);
  writeFileSync(file, source);
  const compiled = await compileRule(file);
  if (!compiled.ok) throw new Error(compiled.message);
  const w = new RuleWorker(name, compiled.code, { ...LIMITS, ...limits }, h, inPool);
  workers.push(w);
  return { w, h, loaded: await w.load() };
}

const update = (uid: string, value: unknown): RuleEvent => ({
  type: 'update',
  uid,
  resource: 'temperature',
  value: value as number,
  at: Date.now(),
});

describe('rule runner', () => {
  it('loads a typed rule and reports its definition without functions', async () => {
    const { loaded } = await ruleWorker(
      'typed',
      `import { rule } from ${JSON.stringify(join(process.cwd(), 'services/rules/rule.ts'))};
       const limit: number = 30;
       export default rule({ name: 'typed', on: { update: { node: 'g-*', resource: 'temperature', when: (e) => Number(e.value) > limit } },
         async run(event, ctx) { ctx.log.info('hot ' + event.type); } });`,
    );
    expect(loaded).toEqual({
      ok: true,
      definition: { name: 'typed', on: { update: { node: 'g-*', resource: 'temperature', when: true } } },
    });
  });

  it('runs, skips by predicate, and gives the rule ctx calls answered by the host', async () => {
    const { w, h } = await ruleWorker(
      'calls',
      `export default { name: 'calls', on: { update: { node: '*', resource: 'temperature', when: (e) => e.value > 30 } },
         async run(e, ctx) { const r = await ctx.write('fan', 'led', '1'); ctx.log.info('result ' + r.result); } };`,
      host(async (op, args) => ({ result: `${op}:${JSON.stringify(args)}` })),
    );
    expect((await w.run('a', update('a', 10))).status).toBe('skipped');
    expect((await w.run('a', update('a', 31))).status).toBe('ok');
    expect(h.logs).toEqual([{ level: 'info', message: 'result write:["fan","led","1"]' }]);
  });

  it('a rule that throws is counted as an error with the message', async () => {
    const { w } = await ruleWorker(
      'throws',
      `export default { name: 'throws', on: {}, run() { throw new TypeError('boom'); } };`,
    );
    const o = await w.run('a', update('a', 1));
    expect(o).toMatchObject({ status: 'error', error: 'TypeError: boom' });
    expect((await w.run('a', update('a', 1))).status).toBe('error');
  });

  it('a looping rule is stopped near its limit, and the next event gets a fresh worker', async () => {
    const { w } = await ruleWorker(
      'loops',
      `export default { name: 'loops', on: {}, run(e) { if (e.value === 'loop') for (;;) {} } };`,
    );
    const o = await w.run('a', update('a', 'loop'));
    expect(o.status).toBe('time-limit');
    // The limit is 100 ms; the watchdog ticks every 5 ms; the loaded machine adds scheduling delay.
    expect(o.ms).toBeLessThan(1000);
    expect((await w.run('a', update('a', 'fine'))).status).toBe('ok');
    expect(w.restarts).toBe(1);
  });

  it('a loop after an await is caught too', async () => {
    const { w } = await ruleWorker(
      'loops-later',
      `export default { name: 'loops-later', on: {}, async run(e, ctx) { await ctx.node('x'); for (;;) {} } };`,
    );
    expect((await w.run('a', update('a', 1))).status).toBe('time-limit');
  });

  it.runIf(existsSync('/proc/thread-self'))(
    'the limit is CPU time: a rule blocked (not computing) past it is not stopped, one blocked for good is',
    async () => {
      const { w } = await ruleWorker(
        'blocks',
        `export default { name: 'blocks', on: {}, run(e) { const cell = new Int32Array(new SharedArrayBuffer(4));
           if (e.value === 'wait') Atomics.wait(cell, 0, 0, 400); if (e.value === 'forever') Atomics.wait(cell, 0, 0); } };`,
      );
      const waited = await w.run('a', update('a', 'wait'));
      // Not stopped: counted at its end, by the time it held its thread.
      expect(waited).toMatchObject({ status: 'time-limit', error: expect.stringMatching(/^used \d+ ms$/) });
      expect(w.restarts).toBe(0);
      const forever = await w.run('a', update('a', 'forever'));
      expect(forever).toMatchObject({ status: 'time-limit', error: expect.stringContaining('blocked for more than') });
      expect(forever.ms).toBeGreaterThanOrEqual(100 + BLOCKED_GRACE_MS);
      expect(w.restarts).toBe(1);
    },
  );

  it('a rule allocating 1 GB runs out of its memory limit; the next event runs', async () => {
    const { w } = await ruleWorker(
      'hog',
      `export default { name: 'hog', on: {}, run(e) { if (e.value !== 'hog') return; const a = [];
         for (let i = 0; i < 1024; i++) a.push(new Array(1024 * 128).fill(i)); return a.length; } };`,
      host(),
      { memoryMb: 32, timeLimitMs: 20_000, maxTimeLimitMs: 20_000 },
    );
    const o = await w.run('a', update('a', 'hog'));
    expect(o.status).toBe('memory');
    expect((await w.run('a', update('a', 'ok'))).status).toBe('ok');
  });

  it('process.exit, process.kill and the environment are out of reach', async () => {
    process.env.RULES_TEST_SECRET = 'hunter2';
    const { w, h } = await ruleWorker(
      'escape',
      `export default { name: 'escape', on: {}, run(e, ctx) {
         if (e.value === 'env') { ctx.log.info('env ' + String(process.env.RULES_TEST_SECRET)); return; }
         if (e.value === 'kill') process.kill(process.pid, 'SIGTERM'); process.exit(3); } };`,
    );
    expect(await w.run('a', update('a', 'exit'))).toMatchObject({
      status: 'error',
      error: 'Error: process.exit is not available to rules',
    });
    expect(await w.run('a', update('a', 'kill'))).toMatchObject({
      error: 'Error: process.kill is not available to rules',
    });
    await w.run('a', update('a', 'env'));
    expect(h.logs.at(-1)?.message).toBe('env undefined');
  });

  it('reading a file outside works: worker threads are not a sandbox (documented)', async () => {
    const secret = join(dir, 'outside.txt');
    writeFileSync(secret, 'outside');
    const h = host();
    const { w } = await ruleWorker(
      'reads',
      `import { readFileSync } from 'node:fs';
       export default { name: 'reads', on: {}, run(e, ctx) { ctx.log.info(readFileSync(${JSON.stringify(secret)}, 'utf8')); } };`,
      h,
    );
    expect((await w.run('a', update('a', 1))).status).toBe('ok');
    expect(h.logs.at(-1)?.message).toBe('outside');
  });

  it('a run waiting on a call that never answers is given up after --max-wait-ms', async () => {
    const { w } = await ruleWorker(
      'stuck',
      `export default { name: 'stuck', on: {}, async run(e, ctx) { await ctx.node('x'); } };`,
      host(() => new Promise(() => undefined)),
      { maxWaitMs: 300 },
    );
    const o = await w.run('a', update('a', 1));
    expect(o).toMatchObject({ status: 'timeout', error: 'no end within 300 ms' });
    expect(o.ms).toBeGreaterThanOrEqual(300);
  });

  it('keeps one node in order while other nodes run concurrently', async () => {
    const h = host(async (_op, args) => new Promise((r) => setTimeout(() => r(args[0]), Number(args[1]))));
    const { w } = await ruleWorker(
      'order',
      `export default { name: 'order', on: {}, async run(e, ctx) { await ctx.write(e.uid + ':' + e.value, String(e.uid === 'slow' ? 50 : 1), null); ctx.log.info(e.uid + ':' + e.value); } };`,
      h,
    );
    const runs: Promise<unknown>[] = [];
    for (let i = 0; i < 5; i++)
      runs.push(w.run('slow', { ...update('slow', i) }), w.run('fast', { ...update('fast', i) }));
    await Promise.all(runs);
    const slow = h.logs.map((l) => l.message).filter((m) => m.startsWith('slow'));
    const fast = h.logs.map((l) => l.message).filter((m) => m.startsWith('fast'));
    expect(slow).toEqual(['slow:0', 'slow:1', 'slow:2', 'slow:3', 'slow:4']);
    expect(fast).toEqual(['fast:0', 'fast:1', 'fast:2', 'fast:3', 'fast:4']);
    // Fast ones did not wait behind the slow node's writes.
    expect(h.logs.findIndex((l) => l.message === 'fast:4')).toBeLessThan(
      h.logs.findIndex((l) => l.message === 'slow:2'),
    );
  });

  it('state persists through the host and survives a worker restart', async () => {
    const h = host();
    const { w } = await ruleWorker(
      'counter',
      `export default { name: 'counter', on: {}, run(e, ctx) { if (e.value === 'loop') for (;;) {}
         const n = (ctx.state.get('n') ?? 0) + 1; ctx.state.set('n', n); ctx.log.info('n=' + n);
         if (e.value === 'big') ctx.state.set('big', 'x'.repeat(70000)); } };`,
      h,
    );
    await w.run('a', update('a', 1));
    await w.run('a', update('a', 1));
    expect((await w.run('a', update('a', 'loop'))).status).toBe('time-limit');
    await w.run('a', update('a', 1));
    expect(h.saved).toEqual({ n: 3 });
    expect(await w.run('a', update('a', 'big'))).toMatchObject({
      status: 'error',
      error: expect.stringContaining('65536 bytes'),
    });
  });

  it('a file whose top level throws or loops does not load', async () => {
    const bad = await ruleWorker('top-throws', `throw new Error('nope'); export default {};`);
    expect(bad.loaded).toMatchObject({ ok: false, message: expect.stringContaining('nope') });
    const notRule = await ruleWorker('not-rule', `export default { name: 'x' };`);
    expect(notRule.loaded).toMatchObject({ ok: false, message: expect.stringContaining('export default a rule') });
    const loops = await ruleWorker('top-loops', `for (;;) {} export default {};`, host(), { loadTimeoutMs: 300 });
    expect(loops.loaded).toMatchObject({ ok: false, message: expect.stringContaining('loading took longer') });
  });

  it('a file that does not compile is reported with its line', async () => {
    const file = join(dir, 'broken.ts');
    writeFileSync(file, 'export default { name: "b", on: {}, run() { return ( } };');
    const c = await compileRule(file);
    expect(c).toMatchObject({ ok: false, message: expect.stringMatching(/broken\.ts:1:\d+/) });
  });
});

describe('rules sharing a thread', () => {
  it('a looping neighbour costs a run that had started, reruns one that had not, and is then isolated', async () => {
    const shared = new RulePool({ threads: 1 });
    let release: (v: unknown) => void = () => undefined;
    const calls: string[] = [];
    const h = host(async (op) => {
      calls.push(op);
      return new Promise((r) => {
        release = r;
      });
    });
    const { w: calm } = await ruleWorker(
      'calm',
      `export default { name: 'calm', on: {}, async run(e, ctx) { if (e.value === 'wait') await ctx.node('x'); ctx.log.info('calm ' + e.value); } };`,
      h,
      {},
      shared,
    );
    const { w: looper } = await ruleWorker(
      'looper',
      `export default { name: 'looper', on: {}, run(e) { if (e.value === 'loop') for (;;) {} } };`,
      host(),
      {},
      shared,
    );
    expect(shared.running).toBe(1);
    const waiting = calm.run('a', update('a', 'wait'));
    await waitFor(() => calls.length === 1, 'the calm rule waiting on its ctx call');
    // Posted in one turn, so in one batch: the loop blocks the thread before calm's second run starts.
    const looping = looper.run('a', update('a', 'loop'));
    const after = calm.run('b', update('b', 'after'));
    expect(await looping).toMatchObject({ status: 'time-limit' });
    expect(await waiting).toMatchObject({ status: 'exited', error: expect.stringContaining('looper hit its limit') });
    expect(await after).toMatchObject({ status: 'ok' });
    expect(h.logs.map((l) => l.message)).toEqual(['calm after']);
    release(null);
    // The looper now has a thread of its own: its next loop does not touch calm's thread.
    expect(looper.isolated).toBe(true);
    expect((await looper.run('a', update('a', 'fine'))).status).toBe('ok');
    expect(shared.running).toBe(2);
    const restarts = calm.restarts;
    expect((await looper.run('a', update('a', 'loop'))).status).toBe('time-limit');
    expect((await calm.run('a', update('a', 'still'))).status).toBe('ok');
    expect(calm.restarts).toBe(restarts);
    await looper.stop();
    await calm.stop();
    await waitFor(() => shared.running === 0, 'threads without rules ended');
  });

  it('a file looping at load is stopped; the files queued behind it in its thread load in the new thread', async () => {
    const shared = new RulePool({ threads: 1 });
    const code = async (name: string, source: string) => {
      const file = join(dir, `${name}.ts`);
      writeFileSync(file, source);
      const c = await compileRule(file);
      if (!c.ok) throw new Error(c.message);
      return c.code;
    };
    const stuck = new RuleWorker(
      'stuck-top',
      await code('stuck-top', 'for (;;) {} export default {};'),
      { ...LIMITS, loadTimeoutMs: 300 },
      host(),
      shared,
    );
    const behind = new RuleWorker(
      'behind',
      await code('behind', `export default { name: 'behind', on: {}, run(e, ctx) { ctx.log.info('behind ran'); } };`),
      LIMITS,
      host(),
      shared,
    );
    workers.push(stuck, behind);
    // Posted in one batch: the thread starts the looping file first.
    const [a, b] = await Promise.all([stuck.load(), behind.load()]);
    expect(a).toMatchObject({ ok: false, message: 'loading took longer than 300 ms' });
    expect(b).toMatchObject({ ok: true, definition: { name: 'behind' } });
    expect((await behind.run('a', update('a', 1))).status).toBe('ok');
  });

  it('a rule cannot take over the loading of the rules after it in its thread', async () => {
    const shared = new RulePool({ threads: 1 });
    const { w: hijack } = await ruleWorker(
      'hijack',
      `export default { name: 'hijack', on: {}, run() { globalThis[Symbol.for('mycelium.rules.register')] = () => undefined; } };`,
      host(),
      {},
      shared,
    );
    expect(await hijack.run('a', update('a', 1))).toMatchObject({
      status: 'error',
      error: expect.stringContaining('TypeError'),
    });
    const next = await ruleWorker('next', `export default { name: 'next', on: {}, run() {} };`, host(), {}, shared);
    expect(next.loaded).toMatchObject({ ok: true, definition: { name: 'next' } });
    expect(shared.running).toBe(1);
    await hijack.stop();
    await next.w.stop();
  });

  it('an exception thrown outside a run is logged and does not end the thread its neighbours share', async () => {
    const shared = new RulePool({ threads: 1 });
    const h = host();
    const { w: late } = await ruleWorker(
      'late-throw',
      `export default { name: 'late-throw', on: {}, run() { setTimeout(() => { throw new Error('late'); }, 0); console.log('said', 1); } };`,
      h,
      {},
      shared,
    );
    const { w: other } = await ruleWorker(
      'other',
      `export default { name: 'other', on: {}, run(e, ctx) { ctx.log.info('other ran'); } };`,
      h,
      {},
      shared,
    );
    expect((await late.run('a', update('a', 1))).status).toBe('ok');
    await waitFor(() => h.logs.some((l) => l.message.includes('late')), 'the late exception logged');
    expect(h.logs).toContainEqual({ level: 'info', message: 'said 1' });
    expect((await other.run('a', update('a', 1))).status).toBe('ok');
    expect(late.restarts + other.restarts).toBe(0);
    await late.stop();
    await other.stop();
  });
});
