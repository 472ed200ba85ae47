// Pure parts of the rules service: cron and periods, node globs, the --http-allow match, rule descriptors.
import { describe, expect, it } from 'vitest';
import { hostAllowed } from '../services/rules/actions.ts';
import { globMatches } from '../services/rules/glob.ts';
import { descriptorProblem, type RuleDescriptor } from '../services/rules/protocol.ts';
import { compileSchedule, nextCron, parseCron, parsePeriod } from '../services/rules/schedule.ts';
import { TriggerIndex } from '../services/rules/trigger-index.ts';

const at = (iso: string) => Date.parse(iso);

describe('schedules', () => {
  it('periods', () => {
    expect(parsePeriod('5m')).toBe(300_000);
    expect(parsePeriod('1d')).toBe(86_400_000);
    expect(parsePeriod('90s')).toBe(90_000);
    for (const bad of ['5', 'm', '-1m', '1.5m', '1w', '', '99999999999999999999d'])
      expect(parsePeriod(bad), bad).toBeUndefined();
    expect(() => compileSchedule({ every: '500ms' })).toThrow(/at least 1000 ms/);
    expect(compileSchedule({ every: '5m' })(1000)).toBe(301_000);
  });

  it('cron: next matching minute, UTC, steps, ranges, lists, both day fields', () => {
    expect(nextCron(parseCron('0 3 * * *'), at('2026-12-02T10:55:00Z'))).toBe(at('2026-12-03T03:00:00Z'));
    expect(nextCron(parseCron('*/15 * * * *'), at('2026-12-02T10:55:30Z'))).toBe(at('2026-12-02T11:00:00Z'));
    expect(nextCron(parseCron('0 9-17 * * 1-5'), at('2026-12-05T12:00:00Z'))).toBe(at('2026-12-07T09:00:00Z'));
    expect(nextCron(parseCron('30 0 1 1 *'), at('2026-12-02T00:00:00Z'))).toBe(at('2027-01-01T00:30:00Z'));
    // Day of month 13 OR Friday (Vixie cron): the next is Friday 4 Dec 2026.
    expect(nextCron(parseCron('0 0 13 * 5'), at('2026-12-02T00:00:00Z'))).toBe(at('2026-12-04T00:00:00Z'));
    // 7 is Sunday too; Feb 30 never comes.
    expect(nextCron(parseCron('0 0 * * 7'), at('2026-12-02T00:00:00Z'))).toBe(at('2026-12-06T00:00:00Z'));
    expect(nextCron(parseCron('0 0 30 2 *'), at('2026-12-02T00:00:00Z'))).toBeUndefined();
    expect(nextCron(parseCron('0,30 * * * *'), at('2026-12-02T10:00:00Z'))).toBe(at('2026-12-02T10:30:00Z'));
  });

  it('cron: refuses what it does not understand, with the field', () => {
    expect(() => parseCron('* * * *')).toThrow('5 fields, got 4');
    expect(() => parseCron('60 * * * *')).toThrow('cron minute: 60 is outside 0-59');
    expect(() => parseCron('* 24 * * *')).toThrow('cron hour');
    expect(() => parseCron('* * 0 * *')).toThrow('cron day of month');
    expect(() => parseCron('*/0 * * * *')).toThrow('step must be at least 1');
    expect(() => parseCron('MON * * * *')).toThrow('not a number');
    expect(() => parseCron('5-1 * * * *')).toThrow('outside');
  });
});

describe('globs and hosts', () => {
  it('node globs', () => {
    expect(globMatches('greenhouse-*', 'greenhouse-12')).toBe(true);
    expect(globMatches('greenhouse-*', 'greenhouse')).toBe(false);
    expect(globMatches('n-?', 'n-1')).toBe(true);
    expect(globMatches('n-?', 'n-12')).toBe(false);
    expect(globMatches('a.b', 'axb')).toBe(false);
    expect(globMatches('(x)+[y]', '(x)+[y]')).toBe(true);
    expect(globMatches('*', 'anything\nat all')).toBe(true);
    // No catastrophic backtracking on a long uid.
    const started = performance.now();
    expect(globMatches('*a*a*a*a*a*a*b', 'a'.repeat(256))).toBe(false);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('--http-allow', () => {
    const allow = ['hooks.example.org', '127.0.0.1:8080', '*.corp.example'];
    expect(hostAllowed(allow, 'hooks.example.org', '443')).toBe(true);
    expect(hostAllowed(allow, 'HOOKS.example.org', '80')).toBe(true);
    expect(hostAllowed(allow, '127.0.0.1', '8080')).toBe(true);
    expect(hostAllowed(allow, '127.0.0.1', '8081')).toBe(false);
    expect(hostAllowed(allow, 'a.corp.example', '443')).toBe(true);
    expect(hostAllowed(allow, 'corp.example', '443')).toBe(false);
    expect(hostAllowed(allow, 'evilcorp.example', '443')).toBe(false);
    expect(hostAllowed(allow, 'hooks.example.org.evil.com', '443')).toBe(false);
    expect(hostAllowed([], 'localhost', '80')).toBe(false);
  });
});

describe('rule descriptors', () => {
  const ok = { name: 'r', on: { update: { node: '*', resource: 't', when: true } } };
  it('accepts a valid one and names the problem of a bad one', () => {
    expect(descriptorProblem(ok)).toBeUndefined();
    expect(descriptorProblem({ ...ok, name: '__proto__' })).toMatch(/^name: /);
    expect(descriptorProblem({ ...ok, name: 'a/b' })).toMatch(/^name: /);
    expect(descriptorProblem({ ...ok, on: {} })).toBe('on: the rule has no trigger');
    expect(descriptorProblem({ ...ok, on: { update: { node: '*' } } })).toMatch(/^on\.update/);
    expect(descriptorProblem({ ...ok, on: { new: { node: 'a\u0000b' } } })).toMatch(/^on\.new\.node/);
    expect(descriptorProblem({ ...ok, on: { new: { node: 'x'.repeat(257) } } })).toMatch(/^on\.new\.node/);
    expect(descriptorProblem({ ...ok, on: { schedule: { every: '1m', cron: '* * * * *' } } })).toMatch(/^on\.schedule/);
    expect(descriptorProblem({ ...ok, timeLimitMs: 0 })).toMatch(/^timeLimitMs/);
    expect(descriptorProblem(null)).toBeDefined();
  });
});

describe('trigger index', () => {
  const rule = (name: string, resource?: string): { name: string; descriptor?: RuleDescriptor } => ({
    name,
    ...(resource === undefined ? {} : { descriptor: { name, on: { update: { node: '*', resource } } } }),
  });
  it('finds rules by literal resource plus every glob-resource rule, and sees changes after invalidate()', () => {
    const all = [
      rule('t', 'temperature'),
      rule('t2', 'temperature'),
      rule('h', 'humidity'),
      rule('any', 'hum*'),
      rule('none'),
    ];
    const index = new TriggerIndex(() => all);
    const names = (r: string) => index.candidates(r).map((e) => e.name);
    expect(names('temperature')).toEqual(['t', 't2', 'any']);
    expect(names('humidity')).toEqual(['h', 'any']);
    expect(names('led')).toEqual(['any']);
    // '__proto__' is a resource like any other: a Map, not an object, holds the index.
    expect(names('__proto__')).toEqual(['any']);
    all.push(rule('led', 'led'));
    expect(names('led')).toEqual(['any']);
    index.invalidate();
    expect(names('led')).toEqual(['led', 'any']);
    all.splice(3, 1);
    index.invalidate();
    expect(names('led')).toEqual(['led']);
    expect(names('x')).toEqual([]);
    expect(index.writes()).toEqual([]);
    all.push({ name: 'w', descriptor: { name: 'w', on: { write: { node: '*' } } } });
    index.invalidate();
    expect(index.writes().map((e) => e.name)).toEqual(['w']);
  });
});
