// Config files are outside input: a key like `__proto__` must not reach an option through the prototype chain.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveConfig } from '../services/common/config.ts';
import { brokerOptions } from '../services/broker/options.ts';
import { type BrokerProcess, spawnBroker } from './helpers/broker-process.ts';
import { makeKeys } from './helpers/keys.ts';
import { TestPeer } from './helpers/ws-client.ts';

function configFile(name: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'myc-cfg-')), name);
  writeFileSync(file, text);
  return file;
}

const brokers: BrokerProcess[] = [];
afterEach(async () => {
  for (const b of brokers.splice(0)) await b.stop();
});

describe('config files', () => {
  it('a JSON config {"__proto__":{"allowAnonymousViewers":true}} is refused and does not turn the option on', () => {
    const file = configFile('c.json', '{"__proto__":{"allowAnonymousViewers":true}}');
    let error: unknown;
    let config: { allowAnonymousViewers: boolean } | undefined;
    try {
      config = resolveConfig(brokerOptions, ['--config', file], {});
    } catch (err) {
      error = err;
    }
    expect(config?.allowAnonymousViewers).not.toBe(true);
    expect(String(error)).toMatch(/"__proto__" is not allowed/);
  });

  it('a YAML config with __proto__, constructor or prototype keys is refused, each one named', () => {
    const file = configFile(
      'c.yaml',
      '__proto__:\n  allowAnonymousViewers: true\nconstructor: 1\nprototype: 2\nport: 9000\n',
    );
    expect(() => resolveConfig(brokerOptions, ['--config', file], {})).toThrow(
      /"__proto__" is not allowed[\s\S]*"constructor" is not allowed[\s\S]*"prototype" is not allowed/,
    );
  });

  it('an inherited name like toString or hasOwnProperty is an unknown option, not a match', () => {
    const file = configFile('c.json', '{"toString":"x","hasOwnProperty":1,"valueOf":2}');
    expect(() => resolveConfig(brokerOptions, ['--config', file], {})).toThrow(
      /unknown option "toString"[\s\S]*unknown option "hasOwnProperty"[\s\S]*unknown option "valueOf"/,
    );
  });

  it('a config file that is not valid JSON is reported as a config error, not a crash', () => {
    const file = configFile('c.json', '{"port": ');
    expect(() => resolveConfig(brokerOptions, ['--config', file], {})).toThrow(/config file .*c\.json/);
  });

  it('kebab-case and camelCase keys both set an option, and the values are the file values', () => {
    const file = configFile('c.json', '{"allow-anonymous-viewers":true,"pingIntervalMs":1234}');
    const config = resolveConfig(brokerOptions, ['--config', file], {});
    expect(config.allowAnonymousViewers).toBe(true);
    expect(config.pingIntervalMs).toBe(1234);
  });

  it('mycelium broker --config with a __proto__ file refuses to start, and a tokenless /ws is never admitted', async () => {
    const keys = makeKeys();
    const file = configFile('c.json', '{"__proto__":{"allowAnonymousViewers":true}}');
    const started = await spawnBroker('cfg-proto', keys.keyFile, ['--config', file]).then(
      (b) => {
        brokers.push(b);
        return b;
      },
      (err: Error) => err,
    );
    if (started instanceof Error) {
      expect(started.message).toMatch(/exited with 2/);
      return;
    }
    // Had it started, the option must still be off: a tokenless /ws upgrade gets a 401.
    const refused = await TestPeer.connect(`${started.ws}/ws`).then(
      (peer) => {
        peer.ws.terminate();
        return { status: 101 };
      },
      (err: { status?: number }) => err,
    );
    expect(refused.status).toBe(401);
  }, 60_000);
});
