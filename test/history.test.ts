// The history end to end on the in-process bus: a node on the real WebSocket gateway, the broker, the history
// service with a SQLite file, and the REST API that asks the service over the bus.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../services/bus/index.ts';
import { subjects } from '../services/bus/subjects.ts';
import { MAX_JSON_POINTS } from '../services/history/protocol.ts';
import type { ValueRow } from '../services/history/store.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { api, pointsOf, startHistory, valueRow } from './helpers/history.ts';
import type { TestPeer } from './helpers/ws-client.ts';
import { rawNode, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';

const dir = mkdtempSync(join(tmpdir(), 'myc-history-e2e-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

let dbSeq = 0;
async function system(historyOverrides = {}) {
  const bus = createBus();
  await bus.start();
  cleanup(() => bus.stop());
  const tb = await startBroker({}, undefined, bus);
  cleanup(() => tb.stop());
  const { service, store } = await startHistory(bus, join(dir, `e2e-${++dbSeq}.db`), cleanup, historyOverrides);
  const gw = await startWsGateway(tb, cleanup);
  const node = async (uid: string): Promise<TestPeer> => rawNode(gw, cleanup, await tb.keys.token('node', uid));
  return { bus, tb, service, store, gw, node };
}

async function problem(tb: TestBroker, path: string, status: number) {
  const res = await api(tb, path);
  const body = (await res.json()) as { error: string; message: string };
  expect(res.status, `${path}: ${body.message}`).toBe(status);
  expect(body.error).toMatch(/^MYC_ERR_/);
  expect(body.message.length).toBeGreaterThan(0);
  return body;
}

describe('history: values from a node to the REST API', () => {
  it('stores every value a node sends and answers them as JSON points and as CSV', async () => {
    const { tb, node } = await system();
    const n = await node('h1');
    n.send({ type: 'update', data: { temp: 20.5 } });
    n.send({ type: 'update', data: { temp: 21 } });
    n.send({ type: 'update', data: { temp: 'sensor error, "stale"' } });
    n.send({ type: 'update', data: { temp: { c: 22 } } });
    const points = await waitFor(async () => {
      const p = await pointsOf(tb, 'h1', 'temp');
      return p.length === 4 ? p : undefined;
    }, 'four stored points');
    expect(points.map((p) => p[1])).toEqual([20.5, 21, 'sensor error, "stale"', { c: 22 }]);
    for (const [at] of points) expect(Math.abs(at - Date.now())).toBeLessThan(60_000);

    const body = (await (await api(tb, '/nodes/h1/resources/temp/history')).json()) as Record<string, unknown>;
    expect(body).toMatchObject({ uid: 'h1', resource: 'temp', from: expect.any(Number), to: expect.any(Number) });

    for (const call of [{ query: '?format=csv' }, { query: '', accept: 'text/csv' }]) {
      const res = await api(tb, `/nodes/h1/resources/temp/history${call.query}`, { accept: call.accept });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/csv/);
      const lines = (await res.text()).trimEnd().split('\n');
      expect(lines[0]).toBe('time,value');
      expect(lines).toHaveLength(5);
      expect(lines[1]).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z,20\.5$/);
      expect(lines[3]).toMatch(/,"sensor error, ""stale"""$/);
      expect(lines[4]).toMatch(/,"\{""c"":22\}"$/);
    }

    const from = points[0][0];
    const to = points[3][0] + 1;
    const buckets = (await (
      await api(tb, `/nodes/h1/resources/temp/history?from=${from}&to=${to}&step=${to - from}&agg=count`)
    ).json()) as { points: [number, number][]; step: number; agg: string };
    expect(buckets).toMatchObject({ step: to - from, agg: 'count', points: [[from, 4]] });
    const avg = await pointsOf(
      tb,
      'h1',
      'temp',
      `?from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}&step=${to - from}`,
    );
    expect(avg).toEqual([[from, 20.75]]);
  });

  it('records presence and writes (who asked, what, the result) as node events', async () => {
    const { tb, node } = await system();
    const n = await node('h2');
    n.send({ type: 'update', data: { led: '0' } });
    await waitFor(async () => (await pointsOf(tb, 'h2', 'led')).length === 1, 'led stored');
    const write = await api(tb, '/nodes/h2/resources/led', { role: 'operator', sub: 'alice', method: 'PUT', body: 1 });
    expect([200, 504]).toContain(write.status);
    n.close();
    const events = await waitFor(async () => {
      const res = await api(tb, '/nodes/h2/events');
      const body = (await res.json()) as { events: { kind: string; detail: Record<string, unknown> }[] };
      return body.events.some((e) => e.kind === 'out') ? body.events : undefined;
    }, 'the out event');
    expect(events.map((e) => e.kind)).toEqual(['new', 'write', 'out']);
    expect(events[1].detail).toMatchObject({ by: 'alice', resource: 'led', payload: 1, result: expect.any(String) });
    expect(events[2].detail).toMatchObject({ reason: expect.any(String) });
  });

  it('settings: viewers read, operators change; units and decimals come with the points; minInterval thins', async () => {
    const { tb, node, service } = await system();
    const path = '/nodes/h3/resources/temp/settings';
    expect((await api(tb, path, { method: 'PUT', body: { units: 'C' } })).status).toBe(403);
    for (const bad of [{ minIntervalMs: -1 }, { units: 'x'.repeat(40) }, { decimals: 99 }, { color: 'red' }, [1]]) {
      const res = await api(tb, path, { role: 'operator', method: 'PUT', body: bad });
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
    const settings = { minIntervalMs: 3_600_000, units: '°C', decimals: 1 };
    const put = await api(tb, path, { role: 'operator', method: 'PUT', body: settings });
    expect(await put.json()).toEqual({ uid: 'h3', resource: 'temp', settings });
    expect(await (await api(tb, path)).json()).toEqual({ uid: 'h3', resource: 'temp', settings });

    const n = await node('h3');
    for (let i = 0; i < 5; i++) n.send({ type: 'update', data: { temp: 20 + i } });
    await waitFor(() => service.counts.skipped === 4, 'four values thinned out');
    const body = (await (await api(tb, '/nodes/h3/resources/temp/history')).json()) as Record<string, unknown>;
    expect(body).toMatchObject({ units: '°C', decimals: 1, points: [[expect.any(Number), 20]] });
  });

  it('maxHistory keeps the newest values: the pruner deletes the rest in the background', async () => {
    const { tb, node } = await system({ pruneIntervalMs: 20 });
    const set = await api(tb, '/nodes/h4/resources/n/settings', {
      role: 'operator',
      method: 'PUT',
      body: { maxHistory: 3 },
    });
    expect(set.status).toBe(200);
    const n = await node('h4');
    for (let i = 0; i < 10; i++) n.send({ type: 'update', data: { n: i } });
    await waitFor(async () => {
      const p = await pointsOf(tb, 'h4', 'n');
      return p.length === 3 && p[2][1] === 9;
    }, 'only the three newest values left');
    expect((await pointsOf(tb, 'h4', 'n')).map((p) => p[1])).toEqual([7, 8, 9]);
  });

  it('pages a long history through the bus: every point once, in order, as JSON and as CSV', async () => {
    const { tb, store } = await system();
    const base = Date.now() - 3_600_000;
    const rows: ValueRow[] = [];
    // Seven points per millisecond, so page boundaries fall inside a millisecond.
    for (let i = 0; i < 12_000; i++)
      rows.push(valueRow('h5', 'big', base + Math.floor(i / 7), `v${i}`.padEnd(40, '.')));
    await store.insert(rows, []);
    const q = `?from=${base}&to=${base + 3_600_000}&limit=${MAX_JSON_POINTS}`;
    const points = await pointsOf(tb, 'h5', 'big', q);
    expect(points).toHaveLength(12_000);
    expect(points.map((p) => p[1])).toEqual(rows.map((r) => r.value));
    expect(await pointsOf(tb, 'h5', 'big', `?from=${base}&to=${base + 3_600_000}&limit=5001`)).toHaveLength(5001);
    const csv = await (
      await api(tb, `/nodes/h5/resources/big/history?from=${base}&to=${base + 3_600_000}&format=csv`)
    ).text();
    const lines = csv.trimEnd().split('\n');
    expect(lines).toHaveLength(12_001);
    expect(lines[12_000]).toMatch(/,v11999\.+$/);
  });
});

describe('history: hostile and bad input', () => {
  it('answers 400 with the reason for bad ranges, limits, steps and names', async () => {
    const { tb } = await system();
    const h = '/nodes/h6/resources/temp/history';
    const cases: [string, RegExp][] = [
      [`${h}?from=2000&to=1000`, /before/],
      [`${h}?from=1000&to=1000`, /before/],
      [`${h}?from=yesterday`, /from/],
      [`${h}?to=1e3`, /to/],
      [`${h}?from=0&to=${11 * 366 * 86_400_000}`, /range/],
      [`${h}?limit=0`, /limit/],
      [`${h}?limit=${MAX_JSON_POINTS + 1}`, /limit/],
      [`${h}?limit=-5`, /limit/],
      [`${h}?step=0`, /step/],
      [`${h}?step=1.5`, /step/],
      [`${h}?from=0&to=86400000&step=1`, /buckets/],
      [`${h}?agg=avg`, /step/],
      [`${h}?step=60000&agg=median`, /agg/],
      // A repeated parameter is refused by the route schema (one string each), before the range checks.
      [`${h}?from=1&from=2`, /from: expected string/],
      [`${h}?format=xml`, /format/],
      ['/nodes/h6/resources/__proto__/history', /resource name/],
      ['/nodes/__proto__/events', /uid/],
      ['/nodes/h6/resources/a%01b/history', /control/],
      ['/nodes/h6/events?step=10', /step/],
      ['/nodes/h6/events?limit=100000', /limit/],
    ];
    for (const [path, reason] of cases) expect((await problem(tb, path, 400)).message, path).toMatch(reason);
    // A uid longer than the identifier rule allows is refused with the rest (the router takes long parameters).
    expect((await api(tb, `/nodes/${'u'.repeat(300)}/resources/temp/history`)).status).toBe(400);
    const anonymous = await fetch(`${tb.http}/api/v1${h}`);
    expect(anonymous.status).toBe(401);
  });

  it('answers 503 with the reason when no history service runs or its store is gone, and keeps serving', async () => {
    const { tb, service, store, bus } = await system();
    await store.close();
    expect((await problem(tb, '/nodes/h7/resources/temp/history', 503)).message).toMatch(/history store unavailable/);
    // In-process, a batch the store refuses is dropped and counted.
    bus.publish(
      subjects.events('b1'),
      Buffer.from(JSON.stringify({ type: 'update', uid: 'h7', endpoint: 't', data: 1 })),
    );
    await waitFor(() => service.dropped === 1, 'the refused value counted as dropped');
    await service.stop();
    expect((await problem(tb, '/nodes/h7/resources/temp/history', 503)).message).toMatch(/no history service/);
    expect((await problem(tb, '/nodes/h7/events', 503)).message).toMatch(/no history service/);
    expect((await api(tb, '/nodes')).status).toBe(200);
  });
});
