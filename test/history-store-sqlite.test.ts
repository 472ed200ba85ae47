import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteHistoryStore } from '../services/history/store-sqlite.ts';
import { historyStoreContract, valueRow } from './helpers/history.ts';

const dir = mkdtempSync(join(tmpdir(), 'myc-history-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

historyStoreContract('sqlite file', async () => new SqliteHistoryStore({ path: join(dir, `h${++n}.db`) }));
historyStoreContract('sqlite in memory', async () => new SqliteHistoryStore({ path: ':memory:' }));

describe('sqlite history store', () => {
  it('keeps what was stored across a close and reopen, and reports its size on disk', async () => {
    const path = join(dir, 'reopen.db');
    const first = new SqliteHistoryStore({ path });
    await first.open();
    await first.insert([valueRow('a', 'b', 1, 1), valueRow('a', 'b', 2, 'two')], []);
    await first.close();
    const second = new SqliteHistoryStore({ path });
    await second.open();
    expect(await second.query({ uid: 'a', resource: 'b', from: 0, to: 10, limit: 10 })).toEqual([
      { at: 1, value: 1 },
      { at: 2, value: 'two' },
    ]);
    const stats = await second.stats();
    expect(stats.values).toBe(2);
    expect(stats.bytes).toBeGreaterThan(0);
    await second.close();
    await second.close();
  });
});
