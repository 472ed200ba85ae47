// The globalSetup that installs the real peers: which binaries are missing -> which Debian packages, and
// root / sudo / neither -> install or stop. PATH, the sudo probe and the install command are injected; nothing
// here uninstalls or installs anything.
import { chmodSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type EnsureOptions,
  ensurePeers,
  missingPeers,
  PEERS,
  postgresBinDirs,
  type Peer,
  PeersMissingError,
  packagesFor,
  plan,
} from './setup/peers.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'peers-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function fakeBin(name: string, mode = 0o755): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '#!/bin/sh\n');
  await chmod(path, mode);
  return path;
}

const bins = (peers: readonly Peer[]): string[] => peers.map((p) => p.bin);
/** Only the injected PATH is searched: the real /usr/bin of this machine must not leak into the answer. */
const lookup = (env: NodeJS.ProcessEnv) => ({ env, extraDirs: [] });

describe('which peers are missing', () => {
  it('finds binaries on PATH and reports the others', async () => {
    await fakeBin('nats-server');
    await fakeBin('mosquitto');
    expect(bins(missingPeers(PEERS, lookup({ PATH: `/nonexistent:${dir}` })))).toEqual([
      'mosquitto_pub',
      'mosquitto_sub',
      'coap-client-notls',
      'coap-server-notls',
      'chromium',
      'postgres',
      'aiosmtpd',
    ]);
  });

  it('searches the Debian directories even when PATH lacks them (nats-server lives in /usr/sbin)', async () => {
    await fakeBin('nats-server');
    const missing = missingPeers(PEERS, { env: { PATH: '/nonexistent' }, extraDirs: [dir] });
    expect(bins(missing)).not.toContain('nats-server');
    expect(bins(missing)).toContain('mosquitto');
  });

  it('finds the PostgreSQL server in its versioned Debian directory, or in POSTGRES_BIN_DIR', async () => {
    await fakeBin('postgres');
    expect(postgresBinDirs({ POSTGRES_BIN_DIR: dir })).toEqual([dir]);
    expect(postgresBinDirs({}).every((d) => /^\/usr\/lib\/postgresql\/[^/]+\/bin$/.test(d))).toBe(true);
    const missing = missingPeers(PEERS, { env: { PATH: '/nonexistent', POSTGRES_BIN_DIR: dir } });
    expect(bins(missing)).not.toContain('postgres');
  });

  it('counts a file that is not executable as missing, and ignores relative PATH entries', async () => {
    await fakeBin('mosquitto', 0o644);
    await fakeBin('chromium');
    const missing = bins(missingPeers(PEERS, lookup({ PATH: `.:${dir}` })));
    expect(missing).toContain('mosquitto');
    expect(missing).not.toContain('chromium');
  });

  it('an override variable replaces the lookup: a missing override is missing even if PATH has the binary', async () => {
    await fakeBin('chromium');
    const elsewhere = await fakeBin('my-nats');
    const missing = bins(
      missingPeers(
        PEERS,
        lookup({ PATH: dir, CHROMIUM_PATH: join(dir, 'no-such-chromium'), NATS_SERVER_BIN: elsewhere }),
      ),
    );
    expect(missing).toContain('chromium');
    expect(missing).not.toContain('nats-server');
  });

  it('maps binaries to Debian packages, each package once', () => {
    const clients = PEERS.filter((p) => p.bin.startsWith('mosquitto_') || p.bin.startsWith('coap-'));
    expect(packagesFor(clients)).toEqual(['mosquitto-clients', 'libcoap3-bin']);
    expect(packagesFor(PEERS)).toEqual([
      'nats-server',
      'mosquitto',
      'mosquitto-clients',
      'libcoap3-bin',
      'chromium',
      'postgresql',
      'python3-aiosmtpd',
    ]);
  });

  it('every package is one CI installs too', async () => {
    const ci = await readFile(join(import.meta.dirname, '..', '.ci', 'run'), 'utf8');
    const line = ci.split('\n').find((l) => l.includes('apt-get install')) ?? '';
    for (const pkg of packagesFor(PEERS)) expect(line.split(/\s+/)).toContain(pkg);
  });
});

describe('install or stop', () => {
  const missing = PEERS.filter((p) => p.bin === 'nats-server' || p.bin === 'mosquitto_sub');

  it('nothing missing: ready', () => {
    expect(plan([], 'none', true)).toEqual({ kind: 'ready' });
  });

  it('as root: apt-get update once, then one install of the packages, no sudo', () => {
    expect(plan(missing, 'root', true)).toEqual({
      kind: 'install',
      commands: [
        ['apt-get', 'update'],
        ['apt-get', 'install', '-y', '--no-install-recommends', 'nats-server', 'mosquitto-clients'],
      ],
    });
  });

  it('with sudo that needs no password: the same commands under sudo -n', () => {
    expect(plan(missing, 'sudo', true)).toEqual({
      kind: 'install',
      commands: [
        ['sudo', '-n', 'apt-get', 'update'],
        ['sudo', '-n', 'apt-get', 'install', '-y', '--no-install-recommends', 'nats-server', 'mosquitto-clients'],
      ],
    });
  });

  it('neither: stop with the one command to run', () => {
    const p = plan(missing, 'none', true);
    expect(p.kind).toBe('stop');
    if (p.kind !== 'stop') return;
    expect(p.message).toContain('nats-server, mosquitto_sub');
    expect(p.message).toContain(
      'sudo apt-get update && sudo apt-get install -y --no-install-recommends nats-server mosquitto-clients',
    );
  });

  it('MYCELIUM_TEST_NO_INSTALL: stop even as root, with the command without sudo', () => {
    const p = plan(missing, 'root', false);
    expect(p.kind).toBe('stop');
    if (p.kind !== 'stop') return;
    expect(p.message).toContain('MYCELIUM_TEST_NO_INSTALL=1');
    expect(p.message).toContain('\n  apt-get update && apt-get install -y --no-install-recommends nats-server');
  });
});

describe('ensurePeers', () => {
  const few = PEERS.filter((p) => p.bin === 'nats-server' || p.bin === 'chromium');

  /** A fake apt-get; with `installs`, the install leaves the binaries in the PATH directory, as the real one does. */
  function harness(uid: number, sudo: boolean, env: NodeJS.ProcessEnv = {}, installs = false) {
    const ran: string[] = [];
    const logged: string[] = [];
    let sudoAsked = 0;
    const options: EnsureOptions = {
      peers: few,
      env: { PATH: dir, ...env },
      extraDirs: [],
      uid,
      sudoWorks: () => {
        sudoAsked++;
        return sudo;
      },
      log: (line) => logged.push(line),
      run: (command) => {
        ran.push(command.join(' '));
        if (installs && command.includes('install')) {
          for (const p of few) {
            writeFileSync(join(dir, p.bin), '#!/bin/sh\n');
            chmodSync(join(dir, p.bin), 0o755);
          }
        }
        return 0;
      },
    };
    return { ran, logged, sudoAsked: () => sudoAsked, options };
  }

  it('everything present: runs nothing, does not even ask sudo', async () => {
    await fakeBin('nats-server');
    await fakeBin('chromium');
    const h = harness(1000, true);
    ensurePeers(h.options);
    expect(h.ran).toEqual([]);
    expect(h.logged).toEqual([]);
    expect(h.sudoAsked()).toBe(0);
  });

  it('missing as a sudo user: prints and runs the two commands, then checks again', async () => {
    const h = harness(1000, true, {}, true);
    ensurePeers(h.options);
    expect(h.ran).toEqual([
      'sudo -n apt-get update',
      'sudo -n apt-get install -y --no-install-recommends nats-server chromium',
    ]);
    expect(h.logged).toEqual([
      'Missing test peers: nats-server, chromium; installing them.',
      '$ sudo -n apt-get update',
      '$ sudo -n apt-get install -y --no-install-recommends nats-server chromium',
    ]);
  });

  it('an install that succeeds but leaves a binary missing stops with the command', () => {
    const h = harness(0, false);
    expect(() => ensurePeers(h.options)).toThrow(/still missing after the install/);
    expect(h.ran).toHaveLength(2);
  });

  it('a failing apt-get stops after that command, naming it', () => {
    const h = harness(0, false);
    h.options.run = (command) => {
      h.ran.push(command.join(' '));
      return 100;
    };
    expect(() => ensurePeers(h.options)).toThrow('`apt-get update` failed (status 100)');
    expect(h.ran).toEqual(['apt-get update']);
  });

  it('neither root nor sudo: stops at once without running anything', () => {
    const h = harness(1000, false);
    const started = performance.now();
    let error: unknown;
    try {
      ensurePeers(h.options);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(PeersMissingError);
    expect((error as Error).stack).not.toContain(' at ');
    expect((error as Error).message).toContain('sudo apt-get install -y --no-install-recommends nats-server chromium');
    expect(h.ran).toEqual([]);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('MYCELIUM_TEST_NO_INSTALL=1: checks only, never asks sudo', () => {
    const h = harness(1000, true, { MYCELIUM_TEST_NO_INSTALL: '1' });
    expect(() => ensurePeers(h.options)).toThrow(PeersMissingError);
    expect(h.ran).toEqual([]);
    expect(h.sudoAsked()).toBe(0);
  });

  it('MYCELIUM_TEST_NO_PEERS=1: skips the check', () => {
    const h = harness(1000, false, { MYCELIUM_TEST_NO_PEERS: '1' });
    ensurePeers(h.options);
    expect(h.ran).toEqual([]);
  });
});
