// Issue 10, finding 1, as reported: one MQTT publish of a 7,000-level JSON value against `mycelium up` used to
// kill the MQTT gateway and with it every service of the process. Played here against the real `mycelium up`
// (one child process), with a write pending on the attacking node so the value also reaches the write check.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readPrivateKey } from '../services/common/keys.ts';
import { mintToken } from '../services/common/tokens.ts';
import { mqttClient } from './helpers/mqtt-gateway.ts';
import { startUp, type UpProcess } from './helpers/up-process.ts';
import { waitFor } from './helpers/wait.ts';

let up: UpProcess | undefined;
afterEach(async () => {
  await up?.kill();
  up = undefined;
});

interface Node {
  uid: string;
  status: string;
  resources: Record<string, unknown>;
}

describe('mycelium up: a deep MQTT value (finding 1)', () => {
  it('survives a 7,000-level MQTT value while a write to that node is pending; demo nodes still answer writes', async () => {
    up = await startUp({ args: ['--demo'] });
    const { home, ports: p } = up;
    const running = up;
    const alive = () => {
      if (!running.alive()) throw new Error(`mycelium up exited: ${running.out.stderr.slice(-2000)}`);
      return true;
    };
    const key = readPrivateKey(join(home, 'key.pem'));
    const operator = await mintToken(key, { role: 'operator', sub: 'op', ttlSeconds: 600 });
    const auth = { authorization: `Bearer ${operator}` };
    const api = `http://127.0.0.1:${p.broker}/api/v1/nodes`;
    const node = async (uid: string): Promise<Node | undefined> => {
      const res = await fetch(`${api}/${uid}`, { headers: auth });
      return res.status === 200 ? ((await res.json()) as Node) : undefined;
    };
    await waitFor(async () => alive() && (await node('demo-ws'))?.status === 'online', 'demo-ws online', 20_000);

    const evil = await mqttClient(`mqtt://127.0.0.1:${p.mqtt}`, {
      username: 'evil',
      password: await mintToken(key, { role: 'node', sub: 'evil', ttlSeconds: 600 }),
      clientId: 'evil',
    });
    try {
      const sets: string[] = [];
      evil.on('message', (topic) => sets.push(topic));
      await evil.subscribeAsync('gateway/evil/#', { qos: 1 });
      await evil.publishAsync('node/evil/led', '{"value":"0"}', { qos: 1 });
      await waitFor(async () => (await node('evil'))?.resources.led === '0', 'evil at the broker');
      // The write waits for evil to echo the value (--write-confirm-ms); evil answers with the deep value.
      const write = fetch(`${api}/evil/resources/led`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'text/plain' },
        body: '1',
      });
      await waitFor(() => sets.includes('gateway/evil/led/set'), 'the write on the wire');
      await evil.publishAsync('node/evil/led', `{"value":${'['.repeat(7000)}${']'.repeat(7000)}}`, { qos: 1 });
      expect((await write).status).toBe(200);
    } finally {
      await evil.endAsync(true);
    }

    // Every service still answers: a demo node's write round-trips.
    alive();
    const put = await fetch(`${api}/demo-ws/resources/led`, {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'text/plain' },
      body: '1',
    });
    expect(put.status).toBe(200);
    await waitFor(async () => (await node('demo-ws'))?.resources.led === '1', 'demo-ws led 1');
    expect((await node('evil'))?.resources.led).toBe('0');
    running.child.kill('SIGINT');
    expect(await running.exited).toBe('code 0');
  }, 60_000);
});
