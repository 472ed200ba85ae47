// Each example of rules/examples/ against a real broker, WebSocket gateway and test nodes (and a local HTTP
// server for the webhook). The example files are used as they are, with their constants shortened for a test
// (time limits, the webhook URL) by replacing the constant's line.
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import type { ExecClientRequest } from '../services/rules/exec-binding.ts';
import type { RulesService } from '../services/rules/service.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { startRules, tempDir } from './helpers/rules.ts';
import { is, nodeUrl, operatorClient, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const EXAMPLES = join(process.cwd(), 'rules/examples');
const RULE_API = join(process.cwd(), 'services/rules/rule.ts');

/** Copies an example into `dir`, pointing its import at the API and replacing `const NAME = …;` lines. */
function install(dir: string, example: string, constants: Record<string, string> = {}): void {
  let text = readFileSync(join(EXAMPLES, example), 'utf8').replace('../../services/rules/rule.ts', RULE_API);
  for (const [name, value] of Object.entries(constants)) {
    const re = new RegExp(`^const ${name} = .*;$`, 'm');
    if (!re.test(text)) throw new Error(`${example} has no constant ${name}`);
    text = text.replace(re, `const ${name} = ${value};`);
  }
  writeFileSync(join(dir, example), text);
}

async function system() {
  const bus = new MemoryBus();
  await bus.start();
  cleanup(() => bus.stop());
  const tb: TestBroker = await startBroker({}, undefined, bus);
  cleanup(() => tb.stop());
  const gw = await startWsGateway(tb, cleanup);
  return { bus, tb, gw, dir: tempDir(cleanup) };
}

async function node(gw: Awaited<ReturnType<typeof startWsGateway>>, tb: TestBroker, id: string) {
  const n = new WsTestNode({
    gatewayUrl: nodeUrl(gw),
    token: await tb.keys.token('node', id),
    led: true,
    backoffInitialMs: 20,
  });
  cleanup(() => n.stop());
  await n.start();
  await n.opened();
  return n;
}

const rule = (s: RulesService, name: string) => s.records().find((r) => r.name === name);

describe('rules/examples', () => {
  it('thermostat: temperature above 30 turns the fan on, below 28 off, with no write in between', async () => {
    const { bus, tb, gw, dir } = await system();
    install(dir, 'thermostat.ts');
    const sensor = await node(gw, tb, 'greenhouse-1');
    const fan = await node(gw, tb, 'fan-1');
    const service = await startRules(bus, cleanup, dir);
    sensor.report({ temperature: 31 });
    await waitFor(() => fan.values.led === '1', 'fan on');
    sensor.report({ temperature: 29 });
    sensor.report({ temperature: 27.5 });
    await waitFor(() => fan.values.led === '0', 'fan off');
    await waitFor(() => rule(service, 'thermostat')?.runs === 3, 'three runs');
    const writes = fan.received.filter((f) => f.type === 'write' || f.endpoint === 'led');
    expect(writes.map((w) => w.payload)).toEqual(['1', '0']);
    expect(rule(service, 'thermostat')?.errors).toBe(0);
  });

  it('out-webhook: a node out longer than the limit is reported once to the webhook; one back in time is not', async () => {
    const { bus, tb, gw, dir } = await system();
    const hooks: Array<Record<string, unknown>> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        hooks.push(JSON.parse(body) as Record<string, unknown>);
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanup(() => new Promise((r) => server.close(r)));
    const port = (server.address() as { port: number }).port;
    install(dir, 'out-webhook.ts', {
      OUT_FOR_MS: '1500',
      CHECK: "'1s'",
      WEBHOOK: `'http://127.0.0.1:${port}/hooks/node-out'`,
    });
    const service = await startRules(bus, cleanup, dir, { httpAllow: [`127.0.0.1:${port}`] });
    const gone = await node(gw, tb, 'controller-1');
    const back = await node(gw, tb, 'controller-2');
    await waitFor(() => tb.broker.table.get('controller-2')?.status === 'online', 'online');
    await gone.stop();
    await back.stop();
    await waitFor(() => rule(service, 'out-webhook')?.recent.filter((r) => r.trigger === 'out').length === 2, 'outs');
    const again = await node(gw, tb, 'controller-2');
    await waitFor(() => hooks.length === 1, 'the webhook', 15_000);
    expect(hooks[0]).toMatchObject({ uid: 'controller-1', reason: 'closed', outSince: expect.any(String) });
    // Two more checks: still one call (notified once), and none for the node that came back.
    const runs = rule(service, 'out-webhook')?.runs ?? 0;
    await waitFor(() => (rule(service, 'out-webhook')?.runs ?? 0) >= runs + 2, 'two more checks', 10_000);
    expect(hooks).toHaveLength(1);
    expect(again.opens).toBe(1);
  }, 60_000);

  it('average: the group average appears on a virtual node, at the broker and its clients', async () => {
    const { bus, tb, gw, dir } = await system();
    install(dir, 'average.ts');
    const a = await node(gw, tb, 'room-a');
    const b = await node(gw, tb, 'room-b');
    await node(gw, tb, 'hall');
    await startRules(bus, cleanup, dir);
    const c = await operatorClient(tb, cleanup);
    a.report({ temperature: 19 });
    b.report({ temperature: 22 });
    await c.next(
      is('update', 'rooms-average', (f) => f.endpoint === 'temperature' && f.data === 20.5),
      'average',
    );
    await c.next(
      is('update', 'rooms-average', (f) => f.endpoint === 'count' && f.data === 2),
      'count',
    );
    expect(tb.broker.table.get('rooms-average')).toMatchObject({ gateway: 'rules', status: 'online' });
  });

  it('nightly-exec: the schedule runs the command on every node that advertises the console', async () => {
    // The exec binding is a recorder here, so this checks the schedule, the agent selection and ctx.exec's
    // arguments; ctx.exec through the console to a real `mycelium agent` is test/rules-exec.test.ts.
    const { bus, tb, gw, dir } = await system();
    install(dir, 'nightly-exec.ts', { AT: "'* * * * *'" });
    const agent = await node(gw, tb, 'agent-1');
    await node(gw, tb, 'plain-1');
    agent.report({ console: '{"commands":{"uptime":{}}}' });
    const calls: ExecClientRequest[] = [];
    const exec = {
      async exec(req: ExecClientRequest) {
        calls.push(req);
        return { status: 'ok' as const, code: 0, output: ' 03:00:00 up 1 day', truncated: false };
      },
    };
    const service = await startRules(bus, cleanup, dir, {}, exec);
    await waitFor(
      () => tb.broker.table.get('agent-1')?.resources.console !== undefined,
      'the console resource at the broker',
    );
    await waitFor(() => service.table.get('agent-1')?.resources.console !== undefined, 'the console resource');
    // A cron schedule fires at the next minute: up to 60 s.
    await waitFor(() => calls.length > 0, 'the nightly command', 70_000);
    expect(calls[0]).toMatchObject({
      uid: 'agent-1',
      gateway: 'ws-test',
      command: 'uptime',
      params: {},
      timeoutMs: 10_000,
    });
    expect(calls.some((c) => c.uid === 'plain-1')).toBe(false);
    await waitFor(() => rule(service, 'nightly-exec')?.runs === 1, 'the run recorded');
    expect(rule(service, 'nightly-exec')?.lastRun).toMatchObject({ status: 'ok', trigger: 'schedule' });
  }, 90_000);
});
