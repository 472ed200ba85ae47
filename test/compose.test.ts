// There is no Docker engine here: check that docker-compose.yml parses and that every Mycelium service runs a
// real `mycelium` subcommand with flags that subcommand accepts.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { resolveConfig } from '../services/common/config.ts';
import { commands } from '../cli/commands.ts';
import { type ServiceName, services } from '../cli/services.ts';

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  volumes?: string[];
}

const compose = parse(readFileSync(new URL('../docker-compose.yml', import.meta.url), 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const mycelium = Object.entries(compose.services).filter(([, s]) => s.image === 'mycelium:latest');

describe('docker-compose.yml', () => {
  it('has NATS, two brokers, the history, accounts, the three gateways, mosquitto and the dashboard', () => {
    const commandsUsed = mycelium.map(([, s]) => s.command?.[0]);
    expect(commandsUsed.filter((c) => c === 'broker')).toHaveLength(2);
    for (const c of ['history', 'accounts', 'ws-gateway', 'coap-gateway', 'mqtt-gateway', 'dashboard', 'keys'])
      expect(commandsUsed).toContain(c);
    expect(Object.keys(compose.services)).toEqual(expect.arrayContaining(['nats', 'mosquitto']));
  });

  it.each(mycelium)('service %s runs a valid mycelium subcommand with valid flags', async (_name, service) => {
    const [name, ...argv] = service.command ?? [];
    expect(Object.hasOwn(commands, name), `unknown subcommand ${name}`).toBe(true);
    // A long-running service's flags are its spec's (the `history` entry of the table also dispatches `export`).
    const loaded = Object.hasOwn(services, name)
      ? await services[name as ServiceName].load()
      : await commands[name].load();
    const options = 'spec' in loaded ? loaded.spec.options : loaded.options;
    expect(options, `${name} exposes its options`).toBeDefined();
    expect(() => resolveConfig(options!, argv, {})).not.toThrow();
  });

  it('references only services it defines, shares the keys volume and health-checks the brokers', () => {
    const names = new Set(Object.keys(compose.services));
    for (const [name, s] of Object.entries(compose.services)) {
      for (const dep of Object.keys(s.depends_on ?? {})) expect(names.has(dep), `${name} depends on ${dep}`).toBe(true);
      for (const arg of s.command ?? []) {
        for (const m of arg.matchAll(/(?:wss?|mqtt|nats):\/\/([\w-]+):/g)) {
          if (m[1] !== 'localhost') expect(names.has(m[1]), `${name} points at ${m[1]}`).toBe(true);
        }
      }
    }
    expect(compose.volumes).toHaveProperty('keys');
    expect(compose.services['broker-1'].healthcheck?.test.join(' ')).toContain('/healthz');
  });

  it('mounts the private key only into services that mint tokens; brokers get the public key read-only', () => {
    // The `keys` service writes the key pair and is the token tool; gateways mint their own gateway tokens; the
    // accounts service signs the access tokens of people who sign in.
    const minters = new Set(['keys', 'ws-gateway', 'coap-gateway', 'mqtt-gateway', 'accounts']);
    const mountsPrivate = (s: Service) => (s.volumes ?? []).some((v) => v.split(':')[0] === 'keys');
    for (const [name, s] of Object.entries(compose.services)) {
      const command = s.command?.[0] ?? '';
      expect(mountsPrivate(s), `${name} mounts the private key`).toBe(minters.has(command));
      if (mountsPrivate(s) && command !== 'keys') expect(s.volumes, `${name}: read-only`).toContain('keys:/keys:ro');
      // A path under /keys or /pub in the command only works where that volume is mounted.
      for (const arg of s.command ?? []) {
        if (arg.startsWith('/keys/')) expect(mountsPrivate(s), `${name} uses ${arg}`).toBe(true);
        if (arg.startsWith('/pub/'))
          expect(
            (s.volumes ?? []).some((v) => v.startsWith('public-keys:/pub')),
            `${name} uses ${arg}`,
          ).toBe(true);
      }
    }
    for (const name of ['broker-1', 'broker-2']) {
      const broker = compose.services[name];
      expect(broker.command).toContain('--public-key-file');
      expect(broker.command).not.toContain('--key-file');
      expect(broker.volumes).toEqual(['public-keys:/pub:ro']);
    }
    expect(compose.services.dashboard.volumes ?? []).toEqual([]);
    // The key pair is written with the public half where the brokers mount it.
    const keys = compose.services.keys.command ?? [];
    expect(keys[keys.indexOf('--public-key-file') + 1]).toMatch(/^\/pub\//);
  });

  it('runs NATS with JetStream (-js)', () => {
    expect(compose.services.nats.command).toContain('-js');
  });
});
