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
import { actionArgsProblem, parseGatewayFrame } from '../services/protocol/frames.ts';
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
