// The rules service with a real broker, WebSocket gateway and test nodes on one in-process bus: triggers,
// ctx (state of nodes, write, emit, http, state), reload, failures, disabling, the bus API.
import { writeFileSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import type { RulesService } from '../services/rules/service.ts';
import { rulesSubjects } from '../services/rules/protocol.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { startRules, tempDir } from './helpers/rules.ts';
import { is, nodeUrl, operatorClient, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const RULE_API = JSON.stringify(join(process.cwd(), 'services/rules/rule.ts'));

async function system() {
  const bus = new MemoryBus();
  await bus.start();
  cleanup(() => bus.stop());
  const tb: TestBroker = await startBroker({}, undefined, bus);
  cleanup(() => tb.stop());
  const gw = await startWsGateway(tb, cleanup);
  const dir = tempDir(cleanup);
  return { bus, tb, gw, dir };
}

async function node(gw: Awaited<ReturnType<typeof startWsGateway>>, tb: TestBroker, id: string) {
  const n = new WsTestNode({
    gatewayUrl: nodeUrl(gw),
    token: await tb.keys.token('node', id),
    led: true,
    backoffInitialMs: 20,
  });
  cleanup(() => n.stop());
  await n.start();
  await n.opened();
  return n;
}

const rule = (service: RulesService, name: string) => service.records().find((r) => r.name === name);

describe('rules service', () => {
  it('thermostat: a temperature update above the limit writes the LED of another node, in order', async () => {
    const { bus, tb, gw, dir } = await system();
    writeFileSync(
      join(dir, 'thermostat.ts'),
      `import { rule } from ${RULE_API};
       export default rule({
         name: 'thermostat',
         on: { update: { node: 'sensor-*', resource: 'temperature' } },
         async run(event, ctx) {
           if (event.type !== 'update') return;
           const r = await ctx.write('fan-1', 'led', Number(event.value) > 30 ? '1' : '0');
           ctx.state.set('last', r.result);
         },
       });`,
    );
    const sensor = await node(gw, tb, 'sensor-1');
    const fan = await node(gw, tb, 'fan-1');
    const service = await startRules(bus, cleanup, dir);
    expect(rule(service, 'thermostat')?.status).toBe('running');
    // Known from the state sync at start, before any event reached the service.
    expect(service.table.get('fan-1')?.gateway).toBe('ws-test');
    sensor.report({ temperature: 35 });
    await waitFor(() => fan.values.led === '1', 'the fan LED on');
    sensor.report({ temperature: 20 });
    await waitFor(() => fan.values.led === '0', 'the fan LED off');
    const r = await waitFor(
      () => ((rule(service, 'thermostat')?.runs ?? 0) >= 2 ? rule(service, 'thermostat') : undefined),
      '2 runs',
    );
    expect(r).toMatchObject({ errors: 0, lastRun: { status: 'ok', trigger: 'update', uid: 'sensor-1' } });
    // The same counts in the service's metrics registry (Prometheus text), with the duration histogram.
    const text = await service.metrics.scrape();
    expect(text).toMatch(/mycelium_rules_rule_runs_total\{rule="thermostat",status="ok"\} [2-9]/);
    expect(text).toMatch(/mycelium_rules_rule_duration_seconds_count\{rule="thermostat"\} [2-9]/);
    expect(text).toContain('mycelium_rules_rules{status="running"} 1');
  });

  it('emit: a derived value appears as a virtual node at the broker and its clients', async () => {
    const { bus, tb, gw, dir } = await system();
    writeFileSync(
      join(dir, 'average.js'),
      `export default { name: 'average', on: { update: { node: 'room-*', resource: 'temperature' } },
         async run(e, ctx) {
           const rooms = await ctx.nodes('room-*');
           const values = rooms.map((n) => Number(n.resources.temperature)).filter((v) => Number.isFinite(v));
           if (values.length > 0) await ctx.emit('rooms-average', 'temperature', values.reduce((a, b) => a + b) / values.length);
         } };`,
    );
    const a = await node(gw, tb, 'room-a');
    const b = await node(gw, tb, 'room-b');
    await startRules(bus, cleanup, dir);
    const c = await operatorClient(tb, cleanup);
    a.report({ temperature: 20 });
    b.report({ temperature: 30 });
    await c.next(
      is('update', 'rooms-average', (f) => f.data === 25),
      'average 25',
    );
    const res = await fetch(`${tb.http}/api/v1/nodes/rooms-average`, {
      headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` },
    });
    expect(await res.json()).toMatchObject({
      uid: 'rooms-average',
      gateway: 'rules',
      protocol: 'rules',
      status: 'online',
    });
  });

  it('emit refuses the uid of a real node; the run fails with the reason', async () => {
    const { bus, tb, gw, dir } = await system();
    writeFileSync(
      join(dir, 'hijack.js'),
      `export default { name: 'hijack', on: { update: { node: 'victim', resource: '*' } },
         async run(e, ctx) { await ctx.emit('victim', 'led', 'pwned'); } };`,
    );
    const victim = await node(gw, tb, 'victim');
    const service = await startRules(bus, cleanup, dir);
    victim.report({ temperature: 1 });
    const r = await waitFor(() => rule(service, 'hijack')?.lastError, 'the failure');
    expect(r.message).toContain('victim is a node of gateway ws-test');
    expect(tb.broker.table.get('victim')?.gateway).toBe('ws-test');
  });

  it('new/out triggers, and ctx.http only to allowed hosts (webhook)', async () => {
    const { bus, tb, gw, dir } = await system();
    const hits: string[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        hits.push(body);
        res.end('thanks');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanup(() => new Promise((r) => server.close(r)));
    const port = (server.address() as { port: number }).port;
    writeFileSync(
      join(dir, 'watch.js'),
      `export default { name: 'watch', on: { out: { node: '*' }, new: { node: '*' } },
         async run(e, ctx) {
           const r = await ctx.http('http://127.0.0.1:${port}/hook', { method: 'POST', body: e.type + ' ' + e.uid + ' ' + (e.reason ?? '') });
           if (e.type === 'out') { try { await ctx.http('http://localhost:${port}/other'); } catch (err) { ctx.state.set('refused', String(err.message)); } }
           ctx.state.set('status', r.status);
         } };`,
    );
    const service = await startRules(bus, cleanup, dir, { httpAllow: [`127.0.0.1:${port}`] });
    const n = await node(gw, tb, 'watched');
    await waitFor(() => hits.includes('new watched '), 'the new webhook');
    await n.stop();
    await waitFor(() => hits.includes('out watched closed'), 'the out webhook');
    await waitFor(() => rule(service, 'watch')?.runs === 2, 'two runs');
    expect(rule(service, 'watch')?.errors).toBe(0);
    expect(hits).toHaveLength(2);
  });

  it('reloads a changed file, reports one that does not compile while the others keep running', async () => {
    const { bus, tb, gw, dir } = await system();
    const counter = (name: string, resource: string) =>
      `export default { name: '${name}', on: { update: { node: '*', resource: '${resource}' } }, run(e, ctx) { ctx.state.set('n', (ctx.state.get('n') ?? 0) + 1); } };`;
    writeFileSync(join(dir, 'a.js'), counter('a', 'temperature'));
    writeFileSync(join(dir, 'b.js'), counter('b', 'temperature'));
    const n = await node(gw, tb, 'n1');
    const service = await startRules(bus, cleanup, dir);
    writeFileSync(join(dir, 'b.js'), 'export default { name: "b", on: { update: ( } };');
    await waitFor(() => rule(service, 'b')?.status === 'failed', 'b failed');
    expect(rule(service, 'b')?.reason).toMatch(/does not compile: b\.js:1:\d+/);
    n.report({ temperature: 1 });
    await waitFor(() => rule(service, 'a')?.runs === 1, 'a still runs');
    writeFileSync(join(dir, 'b.js'), counter('b', 'led'));
    await waitFor(() => rule(service, 'b')?.status === 'running', 'b back');
    expect(rule(service, 'b')?.triggers).toEqual(['update node=* resource=led']);
    writeFileSync(join(dir, 'c.js'), counter('a', 'led'));
    await waitFor(() => rule(service, 'c')?.status === 'failed', 'c failed');
    expect(rule(service, 'c')?.reason).toBe('the name a is already used by a.js');
    unlinkSync(join(dir, 'a.js'));
    await waitFor(() => rule(service, 'a') === undefined, 'a removed');
  });

  it('a rule failing again and again is disabled with the reason; an admin enables it over the bus API', async () => {
    const { bus, tb, gw, dir } = await system();
    writeFileSync(
      join(dir, 'loop.js'),
      `export default { name: 'loop', on: { update: { node: '*', resource: 'temperature' } }, run(e) { if (e.value > 0) for (;;) {} } };`,
    );
    writeFileSync(
      join(dir, 'calm.js'),
      `export default { name: 'calm', on: { update: { node: '*', resource: 'temperature' } }, run() {} };`,
    );
    const n = await node(gw, tb, 'n1');
    const service = await startRules(bus, cleanup, dir);
    for (let i = 1; i <= 3; i++) n.report({ temperature: i });
    const r = await waitFor(
      () => (rule(service, 'loop')?.status === 'disabled' ? rule(service, 'loop') : undefined),
      'loop disabled',
      15_000,
    );
    expect(r.reason).toMatch(
      /^disabled after 3 failures in a row \(last: time-limit: ran longer than its 100 ms limit\)/,
    );
    expect(r.recent.map((x) => x.status)).toEqual(['time-limit', 'time-limit', 'time-limit']);
    await waitFor(() => rule(service, 'calm')?.runs === 3, 'calm ran 3 times');
    expect(rule(service, 'calm')?.errors).toBe(0);
    const ask = async (req: object) =>
      JSON.parse(
        Buffer.from((await bus.request(rulesSubjects.api, Buffer.from(JSON.stringify(req)), 5000)).data).toString(),
      );
    expect(await ask({ op: 'enable', name: 'loop', by: 'admin' })).toMatchObject({
      rule: { name: 'loop', status: 'running' },
    });
    expect(await ask({ op: 'disable', name: 'calm', by: 'alice' })).toMatchObject({
      rule: { status: 'disabled', reason: 'disabled by alice' },
    });
    expect(await ask({ op: 'get', name: 'nope' })).toMatchObject({ error: 'MYC_ERR_UNKNOWN_RULE', status: 404 });
    expect(await ask({ op: 'get', name: '__proto__' })).toMatchObject({ error: 'MYC_ERR_BAD_SHAPE', status: 400 });
    expect(await ask({ op: 'get', name: '../etc/passwd' })).toMatchObject({ status: 400 });
    const bad = await ask({
      op: 'put-source',
      name: 'calm',
      source: 'export default { name: "other", on: { new: { node: "*" } }, run() {} };',
      by: 'a',
    });
    expect(bad).toMatchObject({
      error: 'MYC_ERR_BAD_RULE',
      message: 'the source declares the name other, not calm',
      status: 400,
    });
    const good = await ask({
      op: 'put-source',
      name: 'fresh',
      source: 'export default { name: "fresh", on: { new: { node: "*" } }, run() {} };',
      by: 'a',
    });
    expect(good).toMatchObject({ rule: { name: 'fresh', file: 'fresh.ts', status: 'running' } });
    expect(await ask({ op: 'get-source', name: 'fresh' })).toMatchObject({
      source: expect.stringContaining('"fresh"'),
    });
  });
});
