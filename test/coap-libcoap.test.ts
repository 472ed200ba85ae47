// Interop with an independent CoAP implementation: libcoap's command-line tools (Debian libcoap3-bin).
// coap-client-notls plays a RIOT node posting beacons and values; coap-server-notls plays a node that is
// discovered (RFC 6690), observed (RFC 7641: its /time resource is observable) and written to.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { Agent, defaultTiming, type IncomingMessage, updateTiming } from 'coap';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CoapGateway } from '../gateways/coap/gateway.ts';
import type { CoapGatewayConfig } from '../gateways/coap/options.ts';
import { bindUdp, closeUdp } from '../gateways/coap/transport.ts';
import { silentLogger } from '../services/common/log.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { coapGatewayConfig, coapMetric } from './helpers/coap.ts';
import { waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

const CLIENT = '/usr/bin/coap-client-notls';
const SERVER = '/usr/bin/coap-server-notls';
const run = promisify(execFile);

beforeAll(() => updateTiming({ ackTimeout: 0.125, ackRandomFactor: 1, maxRetransmit: 2 }));
afterAll(() => defaultTiming());

let tb: TestBroker;
let client: TestPeer;
const cleanups: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  tb = await startBroker();
  cleanups.push(() => tb.stop());
  client = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('operator', 'op'));
  cleanups.push(() => client.close());
  await client.register();
});

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function startGateway(overrides: Partial<CoapGatewayConfig> = {}): Promise<CoapGateway> {
  const token = await tb.keys.token('gateway', 'coap-libcoap');
  const gw = new CoapGateway(
    // libcoap's processes start and answer slower than an in-process node: looser than COAP_TEST_OVERRIDES.
    coapGatewayConfig(tb.ws, { checkIntervalMs: 100, requestTimeoutMs: 1000, ...overrides }),
    { log: silentLogger(), tokenSource: async () => token },
  );
  await gw.start();
  cleanups.push(() => gw.stop());
  return gw;
}

/** coap-client-notls; -e payloads take percent-encoding for non-ASCII bytes. Returns what it printed. */
async function coapClient(args: string[]): Promise<string> {
  const { stdout } = await run(CLIENT, ['-B', '3', ...args], { timeout: 10_000 });
  return stdout;
}

const update = (uid: string, endpoint: string, data?: unknown) => (f: Frame) =>
  f.type === 'update' && f.uid === uid && f.endpoint === endpoint && (data === undefined || f.data === data);

let writeId = 0;
async function write(uid: string, endpoint: string, payload: string): Promise<Frame> {
  const id = `lw${++writeId}`;
  client.send({ type: 'update', id, data: { uid, endpoint, payload } });
  return client.next((f) => f.type === 'result' && f.id === id, `result of ${id}`);
}

/** A UDP port that was free a moment ago (libcoap binds it itself). */
async function freeUdpPort(): Promise<number> {
  const s = await bindUdp('::1', 0);
  const port = s.address().port;
  await closeUdp(s);
  return port;
}

/** Starts coap-server-notls on [::1]:<port> and waits until it answers a GET. */
async function startLibcoapServer(): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freeUdpPort();
  const proc = spawn(SERVER, ['-A', '::1', '-p', String(port)], { stdio: 'ignore' });
  cleanups.push(() => {
    proc.kill('SIGTERM');
  });
  const socket = await bindUdp('::', 0);
  const agent = new Agent({ socket });
  const answers = () =>
    new Promise<boolean>((resolve) => {
      const req = agent.request({ hostname: '::1', port, pathname: '/.well-known/core' });
      const t = setTimeout(() => resolve(false), 200);
      req.on('response', (res: IncomingMessage) => {
        clearTimeout(t);
        resolve(res.code === '2.05');
      });
      req.on('error', () => resolve(false));
      req.end();
    });
  try {
    const deadline = Date.now() + 5000;
    while (!(await answers())) {
      if (Date.now() > deadline) throw new Error('coap-server-notls did not answer within 5 s');
    }
  } finally {
    agent.close();
    await closeUdp(socket);
  }
  return { port, proc };
}

describe('libcoap coap-client as a node', () => {
  it('beacons and value posts from coap-client reach the broker', async () => {
    const gw = await startGateway({ requestTimeoutMs: 200 });
    // The 2.04 carries no payload (no echo: see Amplification in docs/gateways/coap.md), so nothing is printed.
    const out = await coapClient(['-m', 'post', '-e', 'alive:abc', `coap://[::1]:${gw.coapPort}/alive`]);
    expect(out.trim()).toBe('');
    expect(await client.next((f) => f.type === 'new' && f.uid === 'abc', 'node abc appears')).toMatchObject({
      protocol: 'CoAP',
    });
    // A new socket (source port) per coap-client run: matched by address, the only node at ::1.
    await coapClient(['-m', 'post', '-e', 'temperature:21.5%C2%B0C', `coap://[::1]:${gw.coapPort}/server`]);
    await client.next(update('abc', 'temperature', '21.5°C'), 'temperature from coap-client');
    await coapClient(['-m', 'post', '-e', 'time:12:30:01', `coap://[::1]:${gw.coapPort}/server`]);
    await client.next(update('abc', 'time', '12:30:01'), 'value with colons');
    // Non-confirmable posts too.
    await coapClient(['-N', '-m', 'post', '-e', 'pressure:1013.25hPa', `coap://[::1]:${gw.coapPort}/server`]);
    await client.next(update('abc', 'pressure', '1013.25hPa'), 'NON post');
    await coapClient(['-m', 'post', '-e', 'reset:abc', `coap://[::1]:${gw.coapPort}/alive`]);
    await client.next((f) => f.type === 'reset' && f.uid === 'abc', 'reset from coap-client');
    expect(client.frames.filter((f) => f.type === 'new' && f.uid === 'abc')).toHaveLength(1);
  });

  it('coap-client sees the error codes for bad posts', async () => {
    const gw = await startGateway({ maxPayloadBytes: 32 });
    const code = async (args: string[]) => {
      const { stdout, stderr } = await run(CLIENT, ['-B', '3', '-v', '6', ...args], { timeout: 10_000 });
      return /t:ACK c:(\d\.\d\d)/.exec(stdout + stderr)?.[1];
    };
    expect(await code(['-m', 'post', '-e', 'temperature:20', `coap://[::1]:${gw.coapPort}/server`])).toBe('4.04');
    expect(await code(['-m', 'post', '-e', 'nocolon', `coap://[::1]:${gw.coapPort}/alive`])).toBe('4.00');
    expect(await code(['-m', 'post', '-e', 'alive:%FF%FE', `coap://[::1]:${gw.coapPort}/alive`])).toBe('4.00');
    expect(await code(['-m', 'post', '-e', `alive:${'x'.repeat(40)}`, `coap://[::1]:${gw.coapPort}/alive`])).toBe(
      '4.13',
    );
    expect(await code(['-m', 'put', '-e', 'alive:x', `coap://[::1]:${gw.coapPort}/alive`])).toBe('4.05');
  });
});

describe('libcoap coap-server as a node', () => {
  it('is discovered, observed and written to', async () => {
    const server = await startLibcoapServer();
    // coap-client beacons from its own ephemeral port, so the server's port is given to the gateway
    // (--node-port); a RIOT node beacons from its server port and needs no such option.
    const gw = await startGateway({ nodePort: server.port });
    await coapClient(['-m', 'post', '-e', 'alive:libcoap', `coap://[::1]:${gw.coapPort}/alive`]);
    await client.next((f) => f.type === 'new' && f.uid === 'libcoap', 'libcoap node appears');
    // /time is observable (";obs" in its link): the first answer and later notifications arrive as updates.
    const first = await client.next(update('libcoap', 'time'), 'time via observe');
    await client.next((f) => update('libcoap', 'time')(f) && f.data !== first.data, 'a later notification', 4000);
    await waitFor(() => /^mycelium_coap_observations [1-9]/m.test(gw.metrics()), 'observation counted');
    // PUT on /time answers 2.04 -> ok; /async refuses PUT with 4.05 -> error "4.05".
    expect(await write('libcoap', 'time', 'x')).toMatchObject({ result: 'ok' });
    expect(await write('libcoap', 'async', 'x')).toMatchObject({ result: 'error', reason: '4.05' });
    // /example_data answers 2.01 Created to the first PUT (RFC 7252 §5.8.3): ok as well.
    expect(await write('libcoap', 'example_data', 'hello °C')).toMatchObject({ result: 'ok' });
    const echoed = await coapClient([`coap://[::1]:${server.port}/example_data`]);
    expect(echoed).toContain('hello °C');
    // The server stops answering: a write times out.
    server.proc.kill('SIGSTOP');
    cleanups.push(() => {
      server.proc.kill('SIGCONT');
    });
    expect(await write('libcoap', 'time', 'y')).toMatchObject({ result: 'timeout' });
  });

  it('without --node-port: the probe at the beacon port gets no answer, the fallback port answers; discovered there', async () => {
    const server = await startLibcoapServer();
    // coap-client beacons from a fresh ephemeral port each run; the server listens on its own port, which stands
    // in for 5683 here (--fallback-node-port, since a test cannot own 5683).
    const gw = await startGateway({ fallbackNodePort: server.port, requestTimeoutMs: 300 });
    await coapClient(['-m', 'post', '-e', 'alive:fallback', `coap://[::1]:${gw.coapPort}/alive`]);
    await client.next((f) => f.type === 'new' && f.uid === 'fallback', 'node appears');
    await waitFor(() => coapMetric(gw, 'probes_total{result="timeout"}') === 1, 'probe at the beacon port unanswered');
    // One probe per beacon: the next beacon pays for the probe at the fallback port.
    await coapClient(['-m', 'post', '-e', 'alive:fallback', `coap://[::1]:${gw.coapPort}/alive`]);
    await client.next(update('fallback', 'time'), 'discovered (and observed) at the fallback port', 4000);
    expect(gw.nodeEndpoint('fallback')?.port).toBe(server.port);
    expect(await write('fallback', 'time', 'x')).toMatchObject({ result: 'ok' });
  });

  it("polls /example_data (1,500 bytes, observable) when libcoap refuses node-coap's block-wise observe", async () => {
    const server = await startLibcoapServer();
    // libcoap's /async answers after ~4 s and comes before /example_data in its links: wait for it.
    const gw = await startGateway({ nodePort: server.port, pollIntervalMs: 200, requestTimeoutMs: 6000 });
    await coapClient(['-m', 'post', '-e', 'alive:blocks', `coap://[::1]:${gw.coapPort}/alive`]);
    const first = await client.next(update('blocks', 'example_data'), 'example_data read by a plain GET', 10_000);
    expect(String(first.data).length).toBe(1500);
    await waitFor(() => /^mycelium_coap_polls 1$/m.test(gw.metrics()), 'one resource polled');
    // A changed value is reported by the next poll.
    await coapClient(['-m', 'put', '-e', 'changed', `coap://[::1]:${server.port}/example_data`]);
    await client.next(update('blocks', 'example_data', 'changed'), 'new value polled', 4000);
    expect(coapMetric(gw, 'polls_total')).toBeGreaterThanOrEqual(2);
  });
});
