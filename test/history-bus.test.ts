// The bus's durable consumption in-process: a bounded queue in front of the handler, drops counted.
import { afterEach, describe, expect, it } from 'vitest';
import type { ConsumeOptions, Delivery } from '../services/bus/index.ts';
import { MemoryBus } from '../services/bus/index.ts';
import { waitFor } from './helpers/wait.ts';

const OPTIONS: ConsumeOptions = {
  stream: 'TEST',
  subjects: ['t.>'],
  durable: 'workers',
  batch: 10,
  maxPending: 5,
  maxAgeMs: 60_000,
  ackWaitMs: 1_000,
  retryMs: 10,
};

let bus: MemoryBus;
afterEach(async () => {
  await bus.stop();
});

describe('in-process durable consumption', () => {
  it('hands batches in order with unique keys and times, and drops beyond the buffer, counted', async () => {
    bus = new MemoryBus();
    const got: Delivery[] = [];
    const consumer = await bus.consume(OPTIONS, async (batch) => {
      got.push(...batch);
    });
    // One synchronous burst: five fit the buffer, the other fifteen are dropped.
    for (let i = 0; i < 20; i++) bus.publish(`t.${i}`, Buffer.from(String(i)));
    await waitFor(() => got.length === 5, 'the buffered five');
    expect(consumer.dropped).toBe(15);
    expect(got.map((d) => Buffer.from(d.data).toString())).toEqual(['0', '1', '2', '3', '4']);
    expect(new Set(got.map((d) => d.key)).size).toBe(5);
    for (const d of got) expect(Math.abs(d.at - Date.now())).toBeLessThan(10_000);
    await consumer.stop();
    await consumer.stop();
    bus.publish('t.x', Buffer.from('late'));
    expect(got).toHaveLength(5);
  });

  it('counts a batch the handler refuses as dropped and goes on with the next', async () => {
    bus = new MemoryBus();
    let fail = true;
    const stored: string[] = [];
    const consumer = await bus.consume({ ...OPTIONS, maxPending: 100 }, async (batch) => {
      if (fail) throw new Error('disk full');
      stored.push(...batch.map((d) => Buffer.from(d.data).toString()));
    });
    for (let i = 0; i < 3; i++) bus.publish('t.a', Buffer.from(String(i)));
    await waitFor(() => consumer.dropped === 3, 'the refused batch counted');
    fail = false;
    bus.publish('t.a', Buffer.from('after'));
    await waitFor(() => stored.length === 1, 'the next batch stored');
    expect(stored).toEqual(['after']);
  });

  it('shares the messages between consumers of one durable name', async () => {
    bus = new MemoryBus();
    const a: Delivery[] = [];
    const b: Delivery[] = [];
    await bus.consume({ ...OPTIONS, maxPending: 100 }, async (batch) => {
      a.push(...batch);
    });
    await bus.consume({ ...OPTIONS, maxPending: 100 }, async (batch) => {
      b.push(...batch);
    });
    for (let i = 0; i < 10; i++) bus.publish('t.s', Buffer.from(String(i)));
    await waitFor(() => a.length + b.length === 10, 'all ten delivered once');
    expect(a.length).toBe(5);
    expect(b.length).toBe(5);
  });
});
