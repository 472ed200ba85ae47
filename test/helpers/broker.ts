import { Broker, type BrokerConfig } from '../../services/broker/broker.ts';
import type { Bus } from '../../services/bus/bus.ts';
import { silentLogger } from '../../services/common/log.ts';
import { makeKeys, type TestKeys } from './keys.ts';

export const TEST_BROKER_CONFIG: BrokerConfig = {
  port: 0,
  host: '127.0.0.1',
  allowAnonymousViewers: false,
  publicMetrics: false,
  maxFrameBytes: 65536,
  pingIntervalMs: 15000,
  gatewayGraceMs: 200,
  writeTimeoutMs: 2000,
  clientBufferBytes: 1048576,
  stateSyncMs: 300,
  peerHeartbeatMs: 100,
  maxNodes: 100000,
  maxResourcesPerNode: 256,
  offlineRetentionMs: 86_400_000,
  offlineSweepMs: 60_000,
  sessionSweepMs: 100,
  handshakeTimeoutMs: 10_000,
  maxConnectionsPerAddress: 20_000,
  clientFramesPerSecond: 100,
  clientFrameBurst: 200,
};

export interface TestBroker {
  broker: Broker;
  keys: TestKeys;
  http: string;
  ws: string;
  stop(): Promise<void>;
}

export async function startBroker(
  overrides: Partial<BrokerConfig> = {},
  keys: TestKeys = makeKeys(),
  bus?: Bus,
): Promise<TestBroker> {
  const broker = new Broker(
    { ...TEST_BROKER_CONFIG, ...overrides },
    { publicKey: keys.publicKey, log: silentLogger(), bus },
  );
  await broker.start();
  return {
    broker,
    keys,
    http: `http://127.0.0.1:${broker.port}`,
    ws: `ws://127.0.0.1:${broker.port}`,
    stop: () => broker.stop(),
  };
}
