// The bounded limiters every edge uses (new nodes per address, frames per client, connections per address), and
// the parse-point guards of the protocol layer that every frame and payload goes through.
import { describe, expect, it } from 'vitest';
import { ConnectionCounter, KeyedRateLimiter } from '../services/common/limits.ts';
import { ErrorCode } from '../services/protocol/errors.ts';
import { encode, parseClientFrame, parseGatewayFrame } from '../services/protocol/frames.ts';
import { isIdentifier, MAX_JSON_DEPTH, parseJson, stringifySafe, valueTooDeep } from '../services/protocol/schema.ts';

const deep = (levels: number): string => '['.repeat(levels) + ']'.repeat(levels);

describe('KeyedRateLimiter', () => {
  it('allows a burst per key, refuses beyond it, and refills at the rate', () => {
    let now = 0;
    const limiter = new KeyedRateLimiter({ perSecond: 2, burst: 3 }, () => now);
    expect([1, 2, 3, 4].map(() => limiter.take('a'))).toEqual([true, true, true, false]);
    expect(limiter.take('b')).toBe(true); // another key has its own bucket
    now = 500; // half a second at 2/s: one token back
    expect(limiter.take('a')).toBe(true);
    expect(limiter.take('a')).toBe(false);
  });

  it('remembers at most maxKeys keys, forgetting the oldest', () => {
    const limiter = new KeyedRateLimiter({ perSecond: 1, burst: 1, maxKeys: 100 });
    for (let i = 0; i < 10_000; i++) limiter.take(`10.0.${i >> 8}.${i & 255}`);
    expect(limiter.size).toBe(100);
  });
});

describe('ConnectionCounter', () => {
  it('caps open connections per address and frees a slot on release', () => {
    const counter = new ConnectionCounter(2);
    expect(counter.acquire('::1')).toBe(true);
    expect(counter.acquire('::1')).toBe(true);
    expect(counter.acquire('::1')).toBe(false);
    expect(counter.acquire('127.0.0.1')).toBe(true);
    counter.release('::1');
    expect(counter.acquire('::1')).toBe(true);
    counter.release('unknown');
    expect(counter.count('unknown')).toBe(0);
  });
});

describe('parse-point guards', () => {
  it('refuses JSON nested deeper than the cap with MYC_ERR_TOO_DEEP, before parsing', () => {
    expect(parseJson(deep(MAX_JSON_DEPTH)).ok).toBe(true);
    const refused = parseJson(deep(MAX_JSON_DEPTH + 1));
    expect(refused).toMatchObject({ ok: false, code: ErrorCode.TooDeep });
    // 100,000 levels: the attack from the issue, far beyond JSON.stringify's recursion limit.
    expect(parseJson(`{"a":${deep(100_000)}}`)).toMatchObject({ ok: false, code: ErrorCode.TooDeep });
  });

  it('lets a frame carry a value of the full depth, and refuses a deeper one', () => {
    const update = (levels: number) => `{"type":"update","uid":"n","endpoint":"e","data":${deep(levels)}}`;
    expect(parseGatewayFrame(update(MAX_JSON_DEPTH)).ok).toBe(true);
    expect(parseGatewayFrame(update(6000))).toMatchObject({ ok: false, code: ErrorCode.TooDeep });
    const write = (levels: number) => `{"type":"update","data":{"uid":"n","endpoint":"led","payload":${deep(levels)}}}`;
    expect(parseClientFrame(write(MAX_JSON_DEPTH)).ok).toBe(true);
    expect(parseClientFrame(write(6000))).toMatchObject({ ok: false, code: ErrorCode.TooDeep });
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    const text = JSON.stringify({ s: `\\"${'['.repeat(1000)}`, t: '{{{{' });
    expect(parseJson(text)).toMatchObject({ ok: true });
  });

  it('never throws from encode: a value too deep to serialize gives undefined', () => {
    let v: unknown = 1;
    for (let i = 0; i < 20_000; i++) v = [v];
    expect(() => stringifySafe(v)).not.toThrow();
    expect(stringifySafe(v)).toBeUndefined();
    expect(encode({ type: 'update', uid: 'n', endpoint: 'e', data: v as never })).toBeUndefined();
    expect(valueTooDeep(v)).toBe(true);
    expect(valueTooDeep({ a: [1, { b: 2 }] })).toBe(false);
  });

  it('applies one identifier rule: no control characters, no prototype names', () => {
    for (const bad of [
      '',
      'x\u0001y',
      'x\u0085y',
      'x\u007fy',
      '__proto__',
      'constructor',
      'prototype',
      'a'.repeat(257),
    ]) {
      expect(isIdentifier(bad), JSON.stringify(bad)).toBeTypeOf('string');
    }
    for (const good of ['node-1', 'temperature', 'ünïcödé', 'a b', 'a'.repeat(256), '__proto']) {
      expect(isIdentifier(good), good).toBeUndefined();
    }
  });
});
