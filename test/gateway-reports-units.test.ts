// The parts of gateway reports that need no socket: the bounded error kinds, the report builder, the action
// dispatcher, the shared argument rule, and the broker's store of reports on an in-process bus (issue 11, item 7).
import { describe, expect, it } from 'vitest';
import { runAction } from '../gateways/common/actions.ts';
import { boundedErrors, OTHER_ERRORS, StatusReporter } from '../gateways/common/status-report.ts';
import type { CoreStats } from '../gateways/common/stats.ts';
import { GatewayReports } from '../services/broker/gateway-reports.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { subjects } from '../services/bus/subjects.ts';
import { silentLogger } from '../services/common/log.ts';
import { Metrics } from '../services/common/metrics.ts';
import { actionArgsProblem, parseBrokerToGatewayFrame, parseGatewayFrame } from '../services/protocol/frames.ts';
import { MAX_REPORT_KEYS } from '../services/protocol/gateway-reports.ts';

describe('boundedErrors', () => {
  it('keeps at most MAX_REPORT_KEYS error kinds; the rest, and kinds that are no valid key, count as other', () => {
    const errors: Record<string, number> = {};
    for (let i = 0; i < 100; i++) errors[`kind-${i}`] = 1;
    errors['kind-0'] = 5;
    errors[`x${'x'.repeat(64)}`] = 1;
    errors['bad\u0000kind'] = 1;
    errors.neg = -1;
    const counts = boundedErrors(errors);
    expect(Object.keys(counts)).toHaveLength(MAX_REPORT_KEYS);
    expect(counts['kind-0']).toBe(5);
    expect(counts[OTHER_ERRORS]).toBe(100 - (MAX_REPORT_KEYS - 1) + 2);
    expect(counts.neg).toBeUndefined();
  });
});

describe('StatusReporter', () => {
  it('builds reports the broker accepts, whatever the source holds', () => {
    const sent: string[] = [];
    const stats = {
      protocol: 'Test',
      messagesIn: 7,
      messagesOut: 0,
      errors: { 'bad-utf8': 1 },
      // A hostile or buggy source: bad keys, negative and infinite counts, too many keys.
      nodes: {
        online: 3,
        'bad\u0000key': 1,
        neg: -1,
        inf: Number.POSITIVE_INFINITY,
        ...Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`s${i}`, i])),
      },
      brokerLinkConnected: true,
      brokerLinkReconnects: 0,
      brokerLinkRenewals: 0,
    } as unknown as CoreStats;
    const reporter = new StatusReporter({
      stats: () => stats,
      inventory: {
        protocol: () => 'Test\u0007',
        version: '1.2.3',
        startedAt: Date.now() - 5000,
        actions: () => ['rediscover'],
        listen: () => Array.from({ length: 20 }, (_, i) => `udp://h:${i}`),
      },
      intervalMs: 60_000,
      send: (frame) => {
        sent.push(frame);
        return true;
      },
      log: silentLogger(),
    });
    reporter.sendInventory();
    reporter.sendStatus();
    const [inventory, status] = sent.map((text) => parseGatewayFrame(text));
    expect(inventory.ok && status.ok).toBe(true);
    if (!inventory.ok || !status.ok || status.value.type !== 'status' || inventory.value.type !== 'inventory') return;
    expect(inventory.value.protocol).toBe('Test?');
    expect(inventory.value.listen).toHaveLength(16);
    expect(status.value.uptimeS).toBeGreaterThanOrEqual(5);
    expect(status.value.messages).toEqual({ in: 7, out: 0 });
    expect(status.value.errors).toEqual({ 'bad-utf8': 1 });
    expect(Object.keys(status.value.nodes)).toHaveLength(MAX_REPORT_KEYS);
    expect(status.value.nodes.online).toBe(3);
  });
});

describe('actions', () => {
  const handler = {
    rediscover: (uid?: string) => ({ result: 'ok' as const, detail: { uid: uid ?? 'all' } }),
    forget: () => {
      throw new Error('boom\nat line 2');
    },
    setLogLevel: () => ({ result: 'ok' as const }),
  };
  const log = silentLogger();

  it('dispatches known actions, and answers unknown names, bad args and failures without throwing', async () => {
    expect(await runAction({ type: 'action', id: 'a', name: 'rediscover', args: {} }, handler, log)).toEqual({
      type: 'action-result',
      id: 'a',
      result: 'ok',
      detail: { uid: 'all' },
    });
    const unknown = await runAction({ type: 'action', id: 'b', name: 'reboot' as never, args: {} }, handler, log);
    expect(unknown.result).toBe('unknown-action');
    const bad = await runAction({ type: 'action', id: 'c', name: 'forget', args: { uid: 7 } as never }, handler, log);
    expect(bad).toMatchObject({ result: 'bad-args', reason: expect.stringContaining('args.uid') });
    const failed = await runAction({ type: 'action', id: 'd', name: 'forget', args: { uid: 'n1' } }, handler, log);
    // A reason the broker accepts: no control characters.
    expect(failed).toMatchObject({ result: 'error', reason: 'boom at line 2' });
    const noHandler = await runAction({ type: 'action', id: 'e', name: 'rediscover' }, undefined, log);
    expect(noHandler.result).toBe('unknown-action');
  });

  it('has one argument rule for both sides', () => {
    expect(actionArgsProblem('rediscover', undefined)).toBeUndefined();
    expect(actionArgsProblem('rediscover', { uid: 'n1' })).toBeUndefined();
    expect(actionArgsProblem('forget', { uid: 'n1' })).toBeUndefined();
    expect(actionArgsProblem('set-log-level', { level: 'debug' })).toBeUndefined();
    for (const [name, args] of [
      ['forget', undefined],
      ['forget', {}],
      ['forget', { uid: '' }],
      ['forget', { uid: 'constructor' }],
      ['forget', { uid: 'n1', level: 'info' }],
      ['rediscover', { other: 1 }],
      ['rediscover', []],
      ['rediscover', null],
      ['set-log-level', { level: 'silent' }],
      ['set-log-level', { level: 'info', uid: 'n1' }],
    ] as const) {
      expect(actionArgsProblem(name, args), `${name} ${JSON.stringify(args)}`).toBeTypeOf('string');
    }
  });
});

describe('GatewayReports (broker side, on an in-process bus)', () => {
  it('keeps the newer connection when an older one reports late, and ignores the older one leaving', async () => {
    const bus = new MemoryBus(() => undefined);
    await bus.start();
    const sent: string[] = [];
    const rejected = new Metrics().counterFamily('rejections_total', 'refused', 'reason');
    const reports = new GatewayReports({
      brokerId: 'a',
      log: silentLogger(),
      bus,
      counters: { rejected },
      broadcast: (text) => sent.push(text),
      config: { gatewayReportMinIntervalMs: 0, gatewayReportTtlMs: 60_000, gatewayHistory: 60 },
    });
    reports.start();
    const publish = (frame: object) => bus.publish(subjects.gatewayReport('gw'), Buffer.from(JSON.stringify(frame)));
    publish({ type: 'gateway', id: 'gw', broker: 'b2', connectedAt: 2000, session: 'new' });
    publish({ type: 'gateway', id: 'gw', broker: 'b1', connectedAt: 1000, session: 'old' });
    publish({ type: 'gateway-gone', id: 'gw', broker: 'b1', session: 'old' });
    expect(reports.get('gw')).toMatchObject({ broker: 'b2', connectedAt: 2000 });
    expect(rejected('stale-gateway-report').value).toBe(1);
    // Garbage on the subject is counted, never applied.
    bus.publish(subjects.gatewayReport('gw'), Buffer.from('{"type":"gateway","id":"__proto__","session":"x"}'));
    bus.publish(
      subjects.gatewayReport('gw'),
      Buffer.from('[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'),
    );
    expect(rejected('bad-bus-gateway-report').value).toBe(2);
    publish({ type: 'gateway-gone', id: 'gw', broker: 'b2', session: 'new' });
    expect(reports.get('gw')).toBeUndefined();
    expect(sent.at(-1)).toBe('{"type":"gateway-gone","id":"gw"}');
    reports.stop();
    await bus.stop();
  });
});

describe('report frames as TypeBox schemas (compiled, frames.ts)', () => {
  const status = {
    type: 'status',
    at: 1,
    uptimeS: 1,
    nodes: { online: 1 },
    messages: { in: 0, out: 0 },
    errors: {},
    reconnects: 0,
    eventLoopLagMs: 0,
  };
  const withStatus = (patch: Record<string, unknown>) => JSON.stringify({ ...status, ...patch });

  it('accepts a report at its bounds', () => {
    const keys = Object.fromEntries(Array.from({ length: MAX_REPORT_KEYS }, (_, i) => [`k${i}`.padEnd(64, 'x'), i]));
    expect(parseGatewayFrame(withStatus({ errors: keys })).ok).toBe(true);
  });

  it.each([
    ['an infinite count (1e999)', withStatus({}).replace('"reconnects":0', '"reconnects":1e999'), 'reconnects'],
    ['a negative count', withStatus({ uptimeS: -1 }), 'uptimeS'],
    ['a __proto__ key', withStatus({}).replace('"errors":{}', '"errors":{"__proto__":1}'), 'errors key'],
    ['a control character in a key', withStatus({ nodes: { 'on\u0000line': 1 } }), 'nodes key'],
    ['a key of 65 characters', withStatus({ errors: { ['k'.repeat(65)]: 1 } }), 'errors'],
    [
      'too many keys',
      withStatus({ errors: Object.fromEntries(Array.from({ length: MAX_REPORT_KEYS + 1 }, (_, i) => [`k${i}`, 1])) }),
      'errors',
    ],
    ['a count that is a string', withStatus({ messages: { in: '1', out: 0 } }), 'messages.in'],
  ])('refuses a status with %s, naming the field', (_what, text, field) => {
    const parsed = parseGatewayFrame(text);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reason).toContain(`status: ${field}`);
  });

  it('bounds inventory strings and lists, action results and actions', () => {
    const inventory = { type: 'inventory', protocol: 'CoAP', version: '1', startedAt: 1, actions: [], listen: [] };
    expect(parseGatewayFrame(JSON.stringify(inventory)).ok).toBe(true);
    for (const bad of [
      { ...inventory, version: 'v'.repeat(257) },
      { ...inventory, protocol: 'Co\nAP' },
      { ...inventory, listen: Array.from({ length: 17 }, () => 'udp://h:1') },
      { ...inventory, startedAt: 'now' },
    ]) {
      expect(parseGatewayFrame(JSON.stringify(bad)).ok, JSON.stringify(bad).slice(0, 80)).toBe(false);
    }
    const result = { type: 'action-result', id: 'a1', result: 'ok' };
    expect(parseGatewayFrame(JSON.stringify({ ...result, detail: { nodes: 2, ok: true, level: 'x' } })).ok).toBe(true);
    expect(parseGatewayFrame(JSON.stringify({ ...result, detail: { nested: { a: 1 } } })).ok).toBe(false);
    expect(parseGatewayFrame(JSON.stringify({ ...result, result: 'timeout' })).ok).toBe(false);
    expect(parseGatewayFrame(JSON.stringify({ ...result, id: 'constructor' })).ok).toBe(false);
    const action = { type: 'action', id: 'a1', name: 'forget' };
    expect(parseBrokerToGatewayFrame(JSON.stringify({ ...action, args: { uid: 'n1' } })).ok).toBe(true);
    expect(parseBrokerToGatewayFrame(JSON.stringify({ ...action, args: ['n1'] })).ok).toBe(false);
  });
});
