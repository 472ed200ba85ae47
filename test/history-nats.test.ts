// The history on a real nats-server with JetStream: events wait in the stream while the service is down, a store
// that fails pauses ingestion without losing anything, workers share the stream, and a worker killed with -9
// mid-ingestion loses nothing and stores nothing twice.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../services/bus/index.ts';
import { subjects } from '../services/bus/subjects.ts';
import { startBroker } from './helpers/broker.ts';
import { guard } from './helpers/child-process.ts';
import { pointsOf, startHistory } from './helpers/history.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { waitFor } from './helpers/wait.ts';

const BIN = fileURLToPath(new URL('../bin/mycelium.js', import.meta.url));
/** Starting `mycelium history` from the sources under load takes a few seconds. */
const CHILD_READY_TIMEOUT_MS = 30_000;
/** Waiting for thousands of values to be stored on a shared, busy machine. */
const INGEST_TIMEOUT_MS = 30_000;
/** A test in-process: its waits and a margin. */
const TEST_TIMEOUT_MS = 60_000;
/** The kill -9 test: two `mycelium history` starts and the ingestion. */
const KILL_TEST_TIMEOUT_MS = 150_000;

const dir = mkdtempSync(join(tmpdir(), 'myc-history-nats-'));
let nats: NatsServer;
beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true });
});
afterAll(async () => {
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

let cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

async function natsBus(name: string) {
  const bus = createBus({ natsUrl: nats.url, name });
  await bus.start();
  cleanup(() => bus.stop());
  return bus;
}

const update = (uid: string, endpoint: string, data: unknown) =>
  Buffer.from(JSON.stringify({ type: 'update', uid, endpoint, data }));

/** Counts the rows and distinct values of a SQLite history file, read-only (the service may be writing). */
function countStored(path: string, uid: string): { rows: number; distinct: number } {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare(
        `SELECT count(*) AS rows, count(DISTINCT value) AS "distinct" FROM points
         WHERE series = (SELECT id FROM series WHERE uid = ?)`,
      )
      .get(uid) as { rows: number; distinct: number };
  } catch {
    return { rows: 0, distinct: 0 };
  } finally {
    db.close();
  }
}

let durableSeq = 0;

describe('history on NATS (JetStream)', () => {
  it(
    'stores what was published while the service was down once it returns, and answers through the broker',
    async () => {
      const durable = `h${++durableSeq}`;
      const path = join(dir, `${durable}.db`);
      const publisher = await natsBus('publisher');
      const first = await startHistory(await natsBus('history-1'), path, cleanup, { durable });
      for (let i = 0; i < 10; i++) publisher.publish(subjects.events('b1'), update('n1', 'v', i));
      await waitFor(() => first.service.counts.values === 10, 'the first ten stored');
      await first.service.stop();
      for (let i = 10; i < 30; i++) publisher.publish(subjects.events('b1'), update('n1', 'v', i));
      await publisher.flush();
      const tb = await startBroker({}, undefined, await natsBus('broker'));
      cleanup(() => tb.stop());
      await startHistory(await natsBus('history-2'), path, cleanup, { durable });
      const points = await waitFor(
        async () => {
          const p = await pointsOf(tb, 'n1', 'v');
          return p.length === 30 ? p : undefined;
        },
        'all thirty values through the REST API',
        INGEST_TIMEOUT_MS,
      );
      expect(points.map((p) => p[1])).toEqual(Array.from({ length: 30 }, (_, i) => i));
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'pauses ingestion while the store fails and resumes without loss when it is back',
    async () => {
      const durable = `h${++durableSeq}`;
      const path = join(dir, `${durable}.db`);
      const publisher = await natsBus('publisher');
      const { service, store } = await startHistory(await natsBus('history'), path, cleanup, { durable, retryMs: 50 });
      await store.close();
      for (let i = 0; i < 50; i++) publisher.publish(subjects.events('b1'), update('n2', 'v', i));
      await waitFor(() => service.counts.failedBatches >= 2, 'batches refused while the store is gone');
      expect(service.counts.values).toBe(0);
      await store.open();
      // A new durable consumer starts at the stream's first message, so it also stores the earlier tests' values:
      // count this test's node only.
      await waitFor(
        () => countStored(path, 'n2').rows === 50,
        'all fifty stored after the store came back',
        INGEST_TIMEOUT_MS,
      );
      expect(countStored(path, 'n2')).toEqual({ rows: 50, distinct: 50 });
      expect(service.dropped).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  it('shares the stream between two workers of one durable name: every value stored once', async () => {
    const durable = `h${++durableSeq}`;
    const path = join(dir, `${durable}.db`);
    const publisher = await natsBus('publisher');
    const a = await startHistory(await natsBus('history-a'), path, cleanup, { durable });
    const b = await startHistory(await natsBus('history-b'), path, cleanup, { durable });
    const n = 2_000;
    for (let i = 0; i < n; i++) publisher.publish(subjects.events('b1'), update('n3', 'v', i));
    await waitFor(
      () => countStored(path, 'n3').rows === n,
      'every value stored by one of the two workers',
      INGEST_TIMEOUT_MS,
    );
    expect(a.service.counts.values).toBeGreaterThan(0);
    expect(b.service.counts.values).toBeGreaterThan(0);
    expect(countStored(path, 'n3')).toEqual({ rows: n, distinct: n });
  });
});

interface HistoryChild {
  child: ChildProcess;
  exited: Promise<void>;
}

/** `mycelium history` in its own process group (so kill -9 reaches all of it), ready once it logged its start. */
async function spawnHistory(path: string, durable: string): Promise<HistoryChild> {
  const child = spawn(
    process.execPath,
    [BIN, 'history', '--nats-url', nats.url, '--db', `sqlite:${path}`, '--durable', durable, '--ack-wait-ms', '1000'],
    { stdio: ['ignore', 'pipe', 'inherit'], detached: true },
  );
  guard(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
    await exited;
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('mycelium history did not start')), CHILD_READY_TIMEOUT_MS);
    child.once('exit', (code) => reject(new Error(`mycelium history exited with ${code}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('history service started')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return { child, exited };
}

describe('history: kill -9 during ingestion', () => {
  it(
    'stores every counted value exactly once after the worker is killed and restarted',
    async () => {
      const durable = `h${++durableSeq}`;
      const path = join(dir, `${durable}.db`);
      const publisher = await natsBus('publisher');
      const first = await spawnHistory(path, durable);
      const n = 5_000;
      let sent = 0;
      const publish = async (upTo: number) => {
        for (; sent < upTo; sent++) {
          publisher.publish(subjects.events('b1'), update('k9', 'count', sent));
          // Spread over time, so the kill lands while batches are being stored.
          if (sent % 100 === 99) await new Promise((r) => setTimeout(r, 2));
        }
        await publisher.flush();
      };
      await publish(2_000);
      await waitFor(() => countStored(path, 'k9').rows > 0, 'ingestion under way', INGEST_TIMEOUT_MS);
      process.kill(-first.child.pid!, 'SIGKILL');
      await first.exited;
      expect(first.child.signalCode).toBe('SIGKILL');
      await publish(n);
      await spawnHistory(path, durable);
      await waitFor(() => countStored(path, 'k9').rows === n, `all ${n} values stored`, INGEST_TIMEOUT_MS);
      expect(countStored(path, 'k9')).toEqual({ rows: n, distinct: n });
    },
    KILL_TEST_TIMEOUT_MS,
  );
});
