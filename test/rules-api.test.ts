// The broker's REST routes for rules, answered by a real rules service over the bus; 503 without one; roles;
// bad names and bodies are 4xx with a code.
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { startBroker } from './helpers/broker.ts';
import { rulesOptions, startRules, tempDir } from './helpers/rules.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The status of a PUT whose body the server refuses before reading it all (fetch sees the socket close). */
function statusOf(base: string, path: string, token: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain', 'content-length': bytes },
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (err) => (err as NodeJS.ErrnoException).code === 'EPIPE' || reject(err));
    req.end('x'.repeat(bytes));
  });
}

async function setup(withRules = true) {
  const bus = new MemoryBus();
  await bus.start();
  cleanup(() => bus.stop());
  const tb = await startBroker({}, undefined, bus);
  cleanup(() => tb.stop());
  const dir = tempDir(cleanup);
  writeFileSync(
    join(dir, 'hello.js'),
    `export default { name: 'hello', description: 'says hello', on: { new: { node: '*' } }, run(e, ctx) { ctx.log.info('hello ' + e.uid); } };`,
  );
  // Loading must end well within the broker's request timeout (a PUT waits for the trial load).
  if (withRules)
    await startRules(bus, cleanup, dir, { limits: { ...rulesOptions('', '').limits, loadTimeoutMs: 2000 } });
  const call = async (method: string, path: string, role: string, body?: string, type = 'text/plain') => {
    const headers: Record<string, string> = { authorization: `Bearer ${await tb.keys.token(role as 'admin')}` };
    if (body !== undefined) headers['content-type'] = type;
    const res = await fetch(`${tb.http}/api/v1${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> & unknown[] };
  };
  return { tb, dir, call };
}

describe('rules REST API', () => {
  it('lists and shows rules to viewers; enable and disable are for admins', async () => {
    const { call } = await setup();
    const list = await call('GET', '/rules', 'viewer');
    expect(list.status).toBe(200);
    expect(list.body).toEqual([
      expect.objectContaining({
        name: 'hello',
        file: 'hello.js',
        status: 'running',
        description: 'says hello',
        triggers: ['new node=*'],
        timeLimitMs: 100,
        runs: 0,
        recent: [],
        worker: 'rules-test',
      }),
    ]);
    expect((await call('GET', '/rules/hello', 'viewer')).body).toMatchObject({ name: 'hello' });
    expect(await call('GET', '/rules/nope', 'viewer')).toMatchObject({
      status: 404,
      body: { error: 'MYC_ERR_UNKNOWN_RULE' },
    });
    expect(await call('POST', '/rules/hello/disable', 'operator')).toMatchObject({
      status: 403,
      body: { error: 'MYC_ERR_FORBIDDEN' },
    });
    expect(await call('POST', '/rules/hello/disable', 'admin')).toMatchObject({
      status: 200,
      body: { status: 'disabled', reason: expect.stringMatching(/^disabled by /) },
    });
    expect(await call('POST', '/rules/hello/enable', 'admin')).toMatchObject({
      status: 200,
      body: { status: 'running' },
    });
  });

  it('admins read and save sources; a bad source is refused with the reason and nothing is saved', async () => {
    const { call, dir } = await setup();
    expect(await call('GET', '/rules/hello/source', 'operator')).toMatchObject({ status: 403 });
    const src = await call('GET', '/rules/hello/source', 'admin');
    expect(src).toMatchObject({
      status: 200,
      body: { name: 'hello', source: expect.stringContaining("name: 'hello'") },
    });
    const before = readFileSync(join(dir, 'hello.js'), 'utf8');
    const broken = await call('PUT', '/rules/hello/source', 'admin', 'export default { name: "hello", on: {');
    expect(broken).toMatchObject({
      status: 400,
      body: { error: 'MYC_ERR_BAD_RULE', message: expect.stringContaining('does not compile') },
    });
    const noTrigger = await call(
      'PUT',
      '/rules/hello/source',
      'admin',
      'export default { name: "hello", on: {}, run() {} };',
    );
    expect(noTrigger).toMatchObject({
      status: 400,
      body: { message: 'is not a valid rule: on: the rule has no trigger' },
    });
    expect(readFileSync(join(dir, 'hello.js'), 'utf8')).toBe(before);
    const ts = `import type { RuleDefinition } from 'nowhere';\nconst r = { name: 'temp', on: { schedule: { every: '1h' } }, run(): void {} };\nexport default r;\n`;
    const saved = await call('PUT', '/rules/temp/source', 'admin', ts);
    expect(saved).toMatchObject({
      status: 200,
      body: { name: 'temp', file: 'temp.ts', status: 'running', triggers: ['schedule every=1h'] },
    });
    expect(readFileSync(join(dir, 'temp.ts'), 'utf8')).toBe(ts);
  });

  it('attacks: bad names, oversized and non-text bodies, a source that loops at load', async () => {
    const { call, tb } = await setup();
    for (const name of ['__proto__', '..x', '.hidden', 'a%2Fb', 'x'.repeat(65), 'a%00b', 'semi;colon']) {
      const r = await call('GET', `/rules/${name}`, 'viewer');
      expect(r.status, name).toBe(400);
      expect(r.body.error, name).toBe('MYC_ERR_BAD_SHAPE');
    }
    expect(await statusOf(tb.http, '/api/v1/rules/big/source', await tb.keys.token('admin'), 300 * 1024)).toBe(413);
    expect(await call('PUT', '/rules/j/source', 'admin', '{"source":"x"}', 'application/json')).toMatchObject({
      status: 400,
    });
    const loops = await call(
      'PUT',
      '/rules/spin/source',
      'admin',
      'for (;;) {}\nexport default { name: "spin", on: { new: { node: "*" } }, run() {} };',
    );
    expect(loops).toMatchObject({ status: 400, body: { message: expect.stringContaining('loading took longer') } });
    const exits = await call('PUT', '/rules/quit/source', 'admin', 'process.exit(1);\nexport default {};');
    expect(exits).toMatchObject({
      status: 400,
      body: { message: expect.stringContaining('process.exit is not available') },
    });
    // Still serving.
    expect((await call('GET', '/rules', 'viewer')).status).toBe(200);
  }, 60_000);

  it('answers 503 when no rules service runs', async () => {
    const { call } = await setup(false);
    expect(await call('GET', '/rules', 'viewer')).toMatchObject({
      status: 503,
      body: { error: 'MYC_ERR_UNAVAILABLE', message: 'no rules service is running' },
    });
  });
});
