// The garbage run against every port of `mycelium up --demo` (issue 10, "the suite that keeps it fixed"):
// random bytes, damaged and hostile CoAP datagrams, MQTT packets, WebSocket frames (before and after a valid
// upgrade) and HTTP requests with bad headers, FUZZ_INPUTS per protocol (10,000 in CI). Afterwards every
// service still answers, a demo node's write still round-trips, and the process grew less than 50 MB.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { garbageInputs, garbageSeed, longRun } from '../../utils/fuzz/budget.ts';
import { type FuzzTokens, type Protocol, type ProtocolStats, runGarbage } from '../../utils/fuzz/garbage-run.ts';
import { type ChildMemory, InspectorClient, inspectorUrl } from '../../utils/fuzz/inspector.ts';
import { coapBeacon, mqttConnack, rssBytes } from '../../utils/fuzz/probes.ts';
import { waitFor } from '../helpers/wait.ts';
import { cliToken, startUp, type UpProcess } from '../helpers/up-process.ts';

/** The bound on memory growth over the whole run. */
const MAX_RSS_GROWTH_BYTES = 50 * 1024 * 1024;
const INPUTS = garbageInputs();
const SEED = garbageSeed();
/** Per protocol: 10,000 inputs take 5-20 s on the CI machine; a long run scales with its input count. */
const PROTOCOL_TIMEOUT_MS = Math.max(90_000, INPUTS * 10);
const PROBE_TIMEOUT_MS = 15_000;

let up: UpProcess;
let tokens: FuzzTokens;
let inspector: InspectorClient;
let before: ChildMemory;
const stats: Partial<Record<Protocol, ProtocolStats>> = {};

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`http://127.0.0.1:${up.ports.broker}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${tokens.operator}`, ...init.headers },
  });
}

async function demoNodesOnline(): Promise<boolean> {
  const res = await api('/api/v1/nodes').catch(() => undefined);
  if (res === undefined || res.status !== 200) return false;
  const list = (await res.json()) as Array<{ uid: string; status: string }>;
  return ['demo-coap', 'demo-mqtt', 'demo-ws'].every((uid) => list.some((n) => n.uid === uid && n.status === 'online'));
}

/** Fails with the tail of the process's stderr (the crash's stack) if `up` is gone. */
function expectAlive(after: string): void {
  if (!up.alive()) {
    throw new Error(`mycelium up exited during ${after}; stderr tail:\n${up.out.stderr.slice(-8000)}`);
  }
}

beforeAll(async () => {
  // --inspect lets the test force a GC in the child before each measurement, so the comparison is of memory
  // the process keeps, not of garbage V8 had not collected yet. rssBytes() reads the same pid from /proc.
  up = await startUp({ inspect: true, args: ['--demo', '--host', '127.0.0.1'] });
  const url = inspectorUrl(up.out.stderr);
  if (url === undefined) throw new Error(`no inspector URL in the stderr of mycelium up: ${up.out.stderr}`);
  inspector = await InspectorClient.connect(url);
  const [operator, gateway, node] = await Promise.all([
    cliToken(up, 'operator', 'fuzz-operator'),
    cliToken(up, 'gateway', 'fuzz-gw'),
    cliToken(up, 'node', 'fuzz-node'),
  ]);
  tokens = { operator, gateway, node: { sub: 'fuzz-node', token: node } };
  await waitFor(demoNodesOnline, 'the three demo nodes online', 20_000);
  before = await inspector.memoryAfterGc();
  // The inspector evaluates in the process whose /proc entry we read: the same pid, the same figure.
  expect(Math.abs(rssBytes(up.pid) - before.rss)).toBeLessThan(20 * 2 ** 20);
}, 90_000);

afterAll(async () => {
  if (up !== undefined) {
    const after = up.alive() ? await inspector.memoryAfterGc() : undefined;
    const mb = (n: number | undefined) => (n === undefined ? undefined : Math.round((n / 2 ** 20) * 10) / 10);
    // The figures docs/testing.md quotes: inputs, time per protocol, memory before and after (after a GC).
    console.log(
      JSON.stringify({
        garbageRun: {
          seed: SEED,
          inputsPerProtocol: INPUTS,
          stats,
          rssMB: { before: mb(before?.rss), after: mb(after?.rss) },
          heapUsedMB: { before: mb(before?.heapUsed), after: mb(after?.heapUsed) },
        },
      }),
    );
    inspector?.close();
    await up.kill();
  }
});

describe(`garbage against every port of mycelium up (${INPUTS} inputs per protocol, seed ${SEED}${longRun() ? ', long run' : ''})`, () => {
  for (const protocol of ['coap', 'mqtt', 'ws', 'http'] as const) {
    it(
      `${protocol}: ${INPUTS} garbage inputs leave the process running`,
      async () => {
        const r = await runGarbage({
          ports: up.ports,
          tokens,
          inputsPerProtocol: INPUTS,
          seed: SEED,
          protocols: [protocol],
        });
        stats[protocol] = r[protocol];
        expect(r[protocol].inputs).toBe(INPUTS);
        expectAlive(`the ${protocol} garbage`);
      },
      PROTOCOL_TIMEOUT_MS,
    );
  }

  it('afterwards the broker, dashboard, CoAP and MQTT ports answer, and a demo node write round-trips', async () => {
    expectAlive('the garbage run');
    await waitFor(
      async () => (await api('/healthz').catch(() => undefined))?.status === 200,
      'broker /healthz 200',
      PROBE_TIMEOUT_MS,
    );
    await waitFor(
      async () => (await fetch(`http://127.0.0.1:${up.ports.dashboard}/`).catch(() => undefined))?.status === 200,
      'the dashboard page',
      PROBE_TIMEOUT_MS,
    );
    const coap = await waitFor(
      () => coapBeacon(up.ports.coap, 'fuzz-probe', 2000),
      'a CoAP reply to a beacon',
      PROBE_TIMEOUT_MS,
    );
    expect(coap).toMatch(/^\d\.\d\d$/);
    const connack = await waitFor(
      async () => (await mqttConnack(up.ports.mqtt, 2000))?.toString(),
      'an MQTT CONNACK',
      PROBE_TIMEOUT_MS,
    );
    expect(Number(connack)).toBeGreaterThanOrEqual(0);
    // The garbage posed as demo-ws's neighbours, not as demo-ws, so it must still be online and writable.
    await waitFor(demoNodesOnline, 'the three demo nodes online after the garbage', PROBE_TIMEOUT_MS);
    const body = await waitFor(
      async () => {
        const res = await api('/api/v1/nodes/demo-ws/resources/led', {
          method: 'PUT',
          headers: { 'content-type': 'text/plain' },
          body: '1',
        });
        return res.status === 200 ? ((await res.json()) as { result?: string }) : undefined;
      },
      'a REST write to demo-ws',
      PROBE_TIMEOUT_MS,
    );
    expect(body.result).toBe('ok');
    expectAlive('the probes');
  }, 60_000);

  // FINDING (garbage run, MQTT), fixed: EmbeddedBroker kept every client whose connection closed while its node
  // token was being verified (aedes never emits clientDisconnect for it) until the token expired; RSS grew ~63 MB.
  // It now watches a token session from registration to clientDisconnect (test/mqtt-hardening.test.ts).
  it('the process grew less than 50 MB over the whole run (RSS after a forced GC)', async () => {
    expectAlive('the garbage run');
    const growth = (await inspector.memoryAfterGc()).rss - before.rss;
    expect(growth).toBeLessThan(MAX_RSS_GROWTH_BYTES);
  });
});
