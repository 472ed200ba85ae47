// The page's value parsers: what devices really send, and garbage that must not throw.
import { describe, expect, it } from 'vitest';
import { applyFrame, type NodeModel } from '../dashboard/src/model.ts';
import { formatNumber, parseImu, parsePosition, parseReading } from '../dashboard/src/values.ts';

describe('dashboard value parsing', () => {
  it('reads numbers with units as pyaiot devices send them', () => {
    expect(parseReading('23.5°C')).toEqual({ value: 23.5, unit: '°C' });
    expect(parseReading('1013.25hPa')).toEqual({ value: 1013.25, unit: 'hPa' });
    expect(parseReading('45.12%')).toEqual({ value: 45.12, unit: '%' });
    expect(parseReading('400ppm')).toEqual({ value: 400, unit: 'ppm' });
    expect(parseReading(' -3.5 °C ')).toEqual({ value: -3.5, unit: '°C' });
    expect(parseReading('42')).toEqual({ value: 42, unit: '' });
    expect(parseReading(17)).toEqual({ value: 17, unit: '' });
    expect(parseReading('1e3lx')).toEqual({ value: 1000, unit: 'lx' });
  });

  it('refuses garbage without throwing', () => {
    for (const v of ['n/a', '', '°C', 'NaN', null, true, [], {}, '12 is a long trailing text that is no unit at all']) {
      expect(parseReading(v as never)).toBeUndefined();
    }
    expect(parseReading(Number.POSITIVE_INFINITY)).toBeUndefined();
  });

  it('reads positions as objects or JSON strings, and refuses impossible ones', () => {
    expect(parsePosition('{"lat": 48.7146, "lng": 2.2056}')).toEqual({ lat: 48.7146, lng: 2.2056 });
    expect(parsePosition({ lat: '1.5', lon: '2' })).toEqual({ lat: 1.5, lng: 2 });
    expect(parsePosition('{"lat": 91, "lng": 0}')).toBeUndefined();
    expect(parsePosition('not json')).toBeUndefined();
    expect(parsePosition([1, 2])).toBeUndefined();
  });

  it('reads the imu list, ignoring mag and bad entries', () => {
    const s = parseImu(
      '[{"type":"acc","values":[3,4,0]},{"type":"gyro","values":[1,-2,3]},{"type":"mag","values":[9,9,9]},{"type":"acc"}]',
    );
    expect(s).toEqual({ acc: 5, gyro: [1, -2, 3] });
    expect(parseImu('[]')).toBeUndefined();
    expect(parseImu('{')).toBeUndefined();
  });

  it('formats numbers for a wall screen', () => {
    expect(formatNumber(23.456)).toBe('23.46');
    expect(formatNumber(20)).toBe('20');
    expect(formatNumber(123456.7)).toBe('123457');
  });
});

describe('dashboard model', () => {
  it('applies new, update, out, reset and a comeback', () => {
    const nodes = new Map<string, NodeModel>();
    expect(applyFrame(nodes, { type: 'update', uid: 'x', endpoint: 'a', data: 1 }, 1)).toBeUndefined();
    applyFrame(nodes, { type: 'new', uid: 'x', gateway: 'g', status: 'online', lastSeen: 5 }, 10);
    expect(applyFrame(nodes, { type: 'update', uid: 'x', endpoint: '/temperature', data: '20°C' }, 11)).toEqual({
      uid: 'x',
      all: false,
      endpoint: 'temperature',
    });
    applyFrame(nodes, { type: 'out', uid: 'x', reason: 'timeout', lastSeen: 12 }, 13);
    expect(nodes.get('x')).toMatchObject({ status: 'offline', reason: 'timeout', lastSeen: 12 });
    applyFrame(nodes, { type: 'new', uid: 'x', gateway: 'g2', status: 'online', lastSeen: 14 }, 14);
    expect(nodes.get('x')).toMatchObject({ status: 'online', reason: undefined, gateway: 'g2' });
    expect(nodes.get('x')?.values.get('temperature')).toBe('20°C');
    applyFrame(nodes, { type: 'reset', uid: 'x' }, 15);
    expect(nodes.get('x')).toMatchObject({ discovering: true });
    expect(nodes.get('x')?.values.size).toBe(0);
  });

  it('forgets a node an operator removed (out with reason removed)', () => {
    const nodes = new Map<string, NodeModel>();
    applyFrame(nodes, { type: 'new', uid: 'x', gateway: 'g', status: 'online', lastSeen: 5 }, 10);
    expect(applyFrame(nodes, { type: 'out', uid: 'x', reason: 'removed', lastSeen: 12 }, 13)).toEqual({
      uid: 'x',
      all: true,
    });
    expect(nodes.has('x')).toBe(false);
  });
});
