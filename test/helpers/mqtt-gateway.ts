// The MQTT gateway under test: a real broker on port 0, the gateway configured through its real option table,
// and an operator web client that records what the broker reports.
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { resolveConfig } from '../../services/common/config.ts';
import { silentLogger } from '../../services/common/log.ts';
import { MqttGateway } from '../../gateways/mqtt/gateway.ts';
import { mqttGatewayOptions } from '../../gateways/mqtt/options.ts';
import type { TestBroker } from './broker.ts';
import { type Frame, TestPeer } from './ws-client.ts';
import { waitFor } from './wait.ts';

export async function startMqttGateway(tb: TestBroker, args: string[] = []): Promise<MqttGateway> {
  const config = resolveConfig(
    mqttGatewayOptions,
    [
      '--broker-url',
      tb.ws,
      '--key-file',
      tb.keys.keyFile,
      '--gateway-id',
      'mqtt-test',
      '--mqtt-port',
      '0',
      '--mqtt-host',
      '127.0.0.1',
      '--http-port',
      '0',
      '--backoff-initial-ms',
      '20',
      // Generous, so a busy machine does not turn an `ok` into `delivered`; tests of `delivered` set their own.
      '--write-confirm-ms',
      '3000',
      ...args,
    ],
    {},
  );
  const gw = new MqttGateway(config, { log: silentLogger() });
  await gw.start();
  await waitFor(() => gw.core.link.connected, 'the gateway to reach the broker');
  return gw;
}

/** A registered operator client on the broker's /ws. */
export async function operator(tb: TestBroker): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('operator', 'op'));
  await p.register();
  return p;
}

export const isFrame =
  (type: string, uid?: string, endpoint?: string) =>
  (f: Frame): boolean =>
    f.type === type && (uid === undefined || f.uid === uid) && (endpoint === undefined || f.endpoint === endpoint);

/** One sample of a counter or gauge from the gateway's Prometheus text, 0 when absent. */
export function metric(gw: MqttGateway, name: string, labels = ''): number {
  const key = `mycelium_mqtt_${name}${labels ? `{${labels}}` : ''} `;
  const line = gw
    .metrics()
    .split('\n')
    .find((l) => l.startsWith(key));
  return line === undefined ? 0 : Number(line.slice(key.length));
}

/** An mqtt.js client that resolves on CONNACK 0 or rejects with the refusal (no reconnection). */
export async function mqttClient(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
  });
  return client;
}
