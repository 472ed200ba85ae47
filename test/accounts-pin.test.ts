// Provisioning by PIN from the device's side (issue 15): a real `mycelium agent --pin` process, and the WS and MQTT
// test nodes, against a real broker, accounts service (SQLite) and gateways of organisation lab-a. The device
// prints a PIN, an operator claims it over REST, the device connects with the key and shows up as a node of the
// claiming organisation (and of no other); with --key-out a restart connects without asking again.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { PIN_DEFAULTS, retryAfterMs } from '../services/agent/pin.ts';
import type { Logger } from '../services/common/log.ts';
import type { MqttGateway } from '../gateways/mqtt/gateway.ts';
import type { WsGateway } from '../gateways/ws/gateway.ts';
import { MqttTestNode } from '../utils/nodes/mqtt-node.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { type AccountsRig, startAccounts } from './helpers/accounts.ts';
import { startAgent } from './helpers/agent.ts';
import type { TestBroker } from './helpers/broker.ts';
import { startMqttGateway } from './helpers/mqtt-gateway.ts';
import { nodeUrl, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';

const PASSWORD = 'alice has a long password';
/** The agent's key file (--key-out). */
const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-pin-'));
let rig: AccountsRig;
let tb: TestBroker;
let ws: WsGateway;
let mqtt: MqttGateway;
let alice: string;
let viewerA: string;
let viewerB: string;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  rig = await startAccounts();
  tb = rig.tb;
  const store = rig.store;
  const orgA = (await createOrg(store, 'lab-a')).id;
  const orgB = (await createOrg(store, 'lab-b')).id;
  await addUser(store, { name: 'alice', password: PASSWORD, org: 'lab-a', role: 'operator' });
  viewerA = (await createKey(store, { orgId: orgA, role: 'viewer' })).text;
  viewerB = (await createKey(store, { orgId: orgB, role: 'viewer' })).text;
  const wsKey = (await createKey(store, { orgId: orgA, role: undefined, gateway: 'ws-a' })).text;
  ws = await startWsGateway(tb, () => undefined, { gatewayId: 'ws-a', token: wsKey });
  const mqttKey = (await createKey(store, { orgId: orgA, role: undefined, gateway: 'mqtt-a' })).text;
  mqtt = await startMqttGateway(tb, ['--token', mqttKey, '--gateway-id', 'mqtt-a']);
  alice = await rig.signIn('alice', PASSWORD);
}, 60_000);

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

afterAll(async () => {
  await mqtt?.stop();
  await ws?.stop();
  await rig?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const visibleNodes = async (token: string) =>
  ((await rig.http('GET', '/api/v1/nodes', { token })).body as unknown as { uid: string; status: string }[])
    .filter((n) => n.status === 'online')
    .map((n) => n.uid);

const claim = (pin: string, node: string) =>
  rig.http('POST', `/api/v1/pins/${pin}/claim`, { token: alice, body: { node } });

/** A logger that records the PINs a device logs, so an in-process node's PIN can be claimed. */
function pinLog(): { log: Logger; pins: string[] } {
  const pins: string[] = [];
  const log: Logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _enc, done) {
        const line = JSON.parse(chunk.toString()) as { pin?: string; msg?: string };
        if (line.msg === 'waiting for the PIN to be claimed' && line.pin !== undefined) pins.push(line.pin);
        done();
      },
    }),
  );
  return { log, pins };
}

describe('provisioning by PIN', { timeout: 120_000 }, () => {
  it('`mycelium agent --pin` prints a PIN, connects once it is claimed, and reuses its --key-out file', async () => {
    const keyOut = join(dir, 'agent.key');
    const args = ['--gateway-url', nodeUrl(ws), '--pin', '--broker-url', tb.http, '--key-out', keyOut];
    const agent = startAgent([...args, '--pin-poll-ms', '200']);
    cleanups.push(() => agent.stop());
    const line = await waitFor(() => agent.lines.find((l) => /^PIN \d{6}: claim this device/.test(l)), 'a PIN', 30_000);
    const pin = (/^PIN (\d{6})/.exec(line) as RegExpExecArray)[1];
    expect((await claim(pin, 'agent-7')).status).toBe(200);
    await waitFor(async () => (await visibleNodes(viewerA)).includes('agent-7'), 'agent-7 online in lab-a', 15_000);
    expect(await visibleNodes(viewerB)).not.toContain('agent-7');
    expect(statSync(keyOut).mode & 0o777).toBe(0o600);
    // No secret in what the agent printed: the key went to the file only.
    expect(agent.lines.join('\n')).not.toMatch(/myk_/);
    await agent.stop();
    await waitFor(async () => !(await visibleNodes(viewerA)).includes('agent-7'), 'agent-7 out', 15_000);
    // A restart reads the key file: online again without a new PIN.
    const again = startAgent([...args, '--pin-poll-ms', '200']);
    cleanups.push(() => again.stop());
    await waitFor(async () => (await visibleNodes(viewerA)).includes('agent-7'), 'agent-7 back', 15_000);
    expect(again.lines.some((l) => l.startsWith('PIN '))).toBe(false);
  });

  it('the WS and MQTT test nodes take their key and node name from a claimed PIN', async () => {
    const wsLog = pinLog();
    const wsNode = new WsTestNode({
      gatewayUrl: nodeUrl(ws),
      log: wsLog.log,
      pin: { brokerUrl: tb.http, pinPollMs: 100 },
    });
    cleanups.push(() => wsNode.stop());
    await wsNode.start();
    const wsPin = await waitFor(() => wsLog.pins[0], 'the WS node to log its PIN', 15_000);
    expect((await claim(wsPin, 'ws-pinned')).status).toBe(200);
    await wsNode.opened();

    const mqttLog = pinLog();
    const mqttNode = new MqttTestNode(
      { mqttUrl: `mqtt://127.0.0.1:${mqtt.mqttPort}`, id: 'placeholder', pin: { brokerUrl: tb.http, pinPollMs: 100 } },
      mqttLog.log,
    );
    cleanups.push(() => mqttNode.stop());
    await mqttNode.start();
    const mqttPin = await waitFor(() => mqttLog.pins[0], 'the MQTT node to log its PIN', 15_000);
    expect((await claim(mqttPin, 'mqtt-pinned')).status).toBe(200);
    await waitFor(() => mqttNode.connected, 'the MQTT node to connect with its key', 15_000);
    expect(mqttNode.id).toBe('mqtt-pinned');
    await waitFor(async () => {
      const seen = await visibleNodes(viewerA);
      return seen.includes('ws-pinned') && seen.includes('mqtt-pinned');
    }, 'both pinned nodes online in lab-a');
  });

  it('honours Retry-After, capped', () => {
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs('0.5')).toBe(500);
    expect(retryAfterMs('999999')).toBe(PIN_DEFAULTS.maxRetryAfterMs);
    expect(retryAfterMs('Wed, 21 Oct 2015 07:28:00 GMT')).toBe(PIN_DEFAULTS.maxRetryAfterMs);
  });
});
