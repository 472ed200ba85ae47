// The history store contract: the checks every HistoryStore passes (SQLite here; PostgreSQL can call the same
// function with its own factory), as test/bus.contract.test.ts does for the two buses.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Bus, DurableStreams } from '../../services/bus/index.ts';
import { silentLogger } from '../../services/common/log.ts';
import { HistoryService, type HistoryServiceConfig } from '../../services/history/service.ts';
import { SqliteHistoryStore } from '../../services/history/store-sqlite.ts';
import type { EventRow, HistoryStore, ValueRow } from '../../services/history/store.ts';
import type { Role } from '../../services/protocol/messages.ts';
import type { TestBroker } from './broker.ts';

let keySeq = 0;
/** A value row with a fresh idempotency key. */
export function valueRow(uid: string, resource: string, at: number, value: ValueRow['value']): ValueRow {
  return { uid, resource, at, value, key: `test:${++keySeq}` };
}

export function historyStoreContract(name: string, makeStore: () => Promise<HistoryStore>): void {
  describe(`history store contract: ${name}`, () => {
    let store: HistoryStore;
    beforeEach(async () => {
      store = await makeStore();
      await store.open();
    });
    afterEach(async () => {
      await store.close();
    });

    it('stores numbers as numbers, text as text and other JSON as JSON, in time order', async () => {
      const rows = [
        valueRow('n1', 'r', 3000, { a: [1, 'x'] }),
        valueRow('n1', 'r', 1000, 21.5),
        valueRow('n1', 'r', 2000, 'on'),
        valueRow('n1', 'r', 4000, null),
        valueRow('n1', 'r', 5000, true),
        valueRow('n1', 'r', 6000, 7),
        valueRow('n1', 'other', 1500, 99),
      ];
      await store.insert(rows, []);
      const points = await store.query({ uid: 'n1', resource: 'r', from: 0, to: 10_000, limit: 100 });
      expect(points).toEqual([
        { at: 1000, value: 21.5 },
        { at: 2000, value: 'on' },
        { at: 3000, value: { a: [1, 'x'] } },
        { at: 4000, value: null },
        { at: 5000, value: true },
        { at: 6000, value: 7 },
      ]);
      expect(await store.query({ uid: 'nobody', resource: 'r', from: 0, to: 10_000, limit: 100 })).toEqual([]);
    });

    it('stores a redelivered row once (same key), and a range is [from, to) cut to limit', async () => {
      const row = valueRow('n2', 'r', 1000, 1);
      await store.insert([row, valueRow('n2', 'r', 2000, 2), valueRow('n2', 'r', 3000, 3)], []);
      await store.insert([row, { ...row }], []);
      expect((await store.stats()).values).toBe(3);
      expect(await store.query({ uid: 'n2', resource: 'r', from: 1000, to: 3000, limit: 100 })).toEqual([
        { at: 1000, value: 1 },
        { at: 2000, value: 2 },
      ]);
      expect(await store.query({ uid: 'n2', resource: 'r', from: 0, to: 9000, limit: 2 })).toHaveLength(2);
    });

    it('aggregates one point per step bucket, stamped at the bucket start; avg/min/max skip text', async () => {
      const rows = [
        valueRow('n3', 't', 1000, 10),
        valueRow('n3', 't', 1500, 20),
        valueRow('n3', 't', 1700, 'text'),
        valueRow('n3', 't', 2100, 5),
        valueRow('n3', 't', 4000, 1),
      ];
      await store.insert(rows, []);
      const q = { uid: 'n3', resource: 't', from: 1000, to: 5000, limit: 100, step: 1000 };
      expect(await store.query({ ...q, agg: 'avg' })).toEqual([
        { at: 1000, value: 15 },
        { at: 2000, value: 5 },
        { at: 4000, value: 1 },
      ]);
      expect((await store.query({ ...q, agg: 'min' }))[0]).toEqual({ at: 1000, value: 10 });
      expect((await store.query({ ...q, agg: 'max' }))[0]).toEqual({ at: 1000, value: 20 });
      expect((await store.query({ ...q, agg: 'last' }))[0]).toEqual({ at: 1000, value: 'text' });
      expect((await store.query({ ...q, agg: 'count' }))[0]).toEqual({ at: 1000, value: 3 });
      expect(await store.query({ ...q, agg: 'count', limit: 2 })).toHaveLength(2);
    });

    it('streams every point of a range in time order, across chunks', async () => {
      const n = 12_345;
      const rows: ValueRow[] = [];
      for (let i = 0; i < n; i++) rows.push(valueRow('n4', 's', 10_000 + Math.floor(i / 3), i));
      await store.insert(rows, []);
      let count = 0;
      let previous = -1;
      for await (const p of store.stream({ uid: 'n4', resource: 's', from: 10_000, to: 10_000 + n })) {
        expect(p.value).toBe(previous + 1);
        previous = p.value as number;
        count++;
      }
      expect(count).toBe(n);
    });

    it('keeps events per node, oldest first, once per key', async () => {
      const events: EventRow[] = [
        { uid: 'n5', at: 2000, kind: 'out', detail: { reason: 'timeout' }, key: 'e:2' },
        { uid: 'n5', at: 1000, kind: 'new', detail: { protocol: 'ws' }, key: 'e:1' },
        {
          uid: 'n5',
          at: 3000,
          kind: 'write',
          detail: { by: 'op', resource: 'led', payload: 1, result: 'ok' },
          key: 'e:3',
        },
        { uid: 'n6', at: 1000, kind: 'reset', detail: {}, key: 'e:4' },
      ];
      await store.insert([], events);
      await store.insert([], [events[0]]);
      const got = await store.events('n5', 0, 10_000, 100);
      expect(got.map((e) => [e.at, e.kind])).toEqual([
        [1000, 'new'],
        [2000, 'out'],
        [3000, 'write'],
      ]);
      expect(got[1].detail).toEqual({ reason: 'timeout' });
      expect(await store.events('n5', 0, 10_000, 1)).toHaveLength(1);
    });

    it('keeps settings per resource, `__proto__` included as plain text', async () => {
      expect(await store.getSettings('n7', 'temp')).toBeUndefined();
      await store.putSettings('n7', 'temp', { units: '°C', decimals: 1, maxHistory: 10 });
      await store.putSettings('n7', 'temp', { units: 'K' });
      expect(await store.getSettings('n7', 'temp')).toEqual({ units: 'K' });
      await store.putSettings('n7', '__proto__', { units: 'x' });
      expect(await store.getSettings('n7', '__proto__')).toEqual({ units: 'x' });
      await store.insert([valueRow('n7', '__proto__', 1000, 'p')], []);
      expect(await store.query({ uid: 'n7', resource: '__proto__', from: 0, to: 2000, limit: 10 })).toEqual([
        { at: 1000, value: 'p' },
      ]);
    });

    it('prunes by retention age and maxHistory within a budget per call', async () => {
      const now = 1_000_000;
      const rows: ValueRow[] = [];
      for (let i = 0; i < 20; i++) rows.push(valueRow('n8', 'old', now - 100_000 + i, i));
      for (let i = 0; i < 20; i++) rows.push(valueRow('n8', 'capped', now - 10 + i, i));
      for (let i = 0; i < 5; i++) rows.push(valueRow('n8', 'kept', now - 50_000 + i, i));
      await store.insert(rows, [{ uid: 'n8', at: now - 100_000, kind: 'new', detail: {}, key: 'e:old' }]);
      await store.putSettings('n8', 'capped', { maxHistory: 5 });
      await store.putSettings('n8', 'kept', { retentionMs: 1_000_000 });
      let deleted = 0;
      for (let i = 0; i < 20; i++) {
        const d = await store.prune(now, 60_000, 7);
        expect(d).toBeLessThanOrEqual(7);
        deleted += d;
        if (d === 0) break;
      }
      expect(deleted).toBe(20 + 15 + 1);
      expect(await store.query({ uid: 'n8', resource: 'old', from: 0, to: 2 * now, limit: 100 })).toEqual([]);
      const capped = await store.query({ uid: 'n8', resource: 'capped', from: 0, to: 2 * now, limit: 100 });
      expect(capped.map((p) => p.value)).toEqual([15, 16, 17, 18, 19]);
      expect(await store.query({ uid: 'n8', resource: 'kept', from: 0, to: 2 * now, limit: 100 })).toHaveLength(5);
      expect(await store.events('n8', 0, 2 * now, 10)).toEqual([]);
    });
  });
}

/** The service's settings for tests: small batches, quick retries and pruning, short redelivery. */
export const TEST_HISTORY_CONFIG: HistoryServiceConfig = {
  retentionMs: 30 * 86_400_000,
  durable: 'history',
  batch: 100,
  maxPending: 20_000,
  ackWaitMs: 1_000,
  retryMs: 100,
  streamMaxAgeMs: 3_600_000,
  pruneIntervalMs: 50,
  pruneBudget: 1_000,
};

/** A history service on `bus` with a SQLite file in `dir`; stopped by `cleanup`. */
export async function startHistory(
  bus: Bus & DurableStreams,
  path: string,
  cleanup: (fn: () => unknown) => void,
  overrides: Partial<HistoryServiceConfig> = {},
): Promise<{ service: HistoryService; store: SqliteHistoryStore }> {
  const store = new SqliteHistoryStore({ path });
  const service = new HistoryService({ ...TEST_HISTORY_CONFIG, ...overrides }, { bus, store, log: silentLogger() });
  await service.start();
  cleanup(() => service.stop());
  return { service, store };
}

export interface ApiCall {
  role?: Role;
  method?: string;
  body?: unknown;
  accept?: string;
  sub?: string;
}

/** A REST call to the broker with a token of `role` (viewer by default). */
export async function api(tb: TestBroker, path: string, call: ApiCall = {}): Promise<Response> {
  const token = await tb.keys.token(call.role ?? 'viewer', call.sub);
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (call.accept !== undefined) headers.accept = call.accept;
  if (call.body !== undefined) headers['content-type'] = 'application/json';
  return fetch(`${tb.http}/api/v1${path}`, {
    method: call.method ?? 'GET',
    headers,
    body: call.body === undefined ? undefined : JSON.stringify(call.body),
  });
}

/** The JSON points of a resource's history (raw, the default range). */
export async function pointsOf(
  tb: TestBroker,
  uid: string,
  resource: string,
  query = '',
): Promise<[number, unknown][]> {
  const res = await api(tb, `/nodes/${uid}/resources/${resource}/history${query}`);
  if (res.status !== 200) throw new Error(`history ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { points: [number, unknown][] }).points;
}
