// vitest globalSetup: make sure the real peers the integration tests start are installed, before any test runs.
// On a fresh machine, dozens of tests would otherwise fail one by one with ENOENT. When something is missing the
// run installs it if it can do so without a prompt (root, or sudo without a password), printing each command;
// otherwise it stops at once with the one command to run. When everything is present it costs a few stat calls.
//
// MYCELIUM_TEST_NO_INSTALL=1   only check: stop with the command instead of installing.
// MYCELIUM_TEST_NO_PEERS=1     skip the check (running only unit tests on a machine without the peers).
import { spawnSync } from 'node:child_process';
import { accessSync, constants, readdirSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

export interface Peer {
  /** The executable's name, looked up on PATH and in the Debian directories. */
  bin: string;
  /** Environment variable a helper reads to use another binary; when set, that path must exist instead. */
  env?: string;
  /** The Debian package that ships it. */
  pkg: string;
}

/** Every binary a test or helper under test/ starts (see test/helpers/ and test/coap-libcoap.test.ts). */
export const PEERS: readonly Peer[] = [
  { bin: 'nats-server', env: 'NATS_SERVER_BIN', pkg: 'nats-server' },
  { bin: 'mosquitto', env: 'MOSQUITTO_BIN', pkg: 'mosquitto' },
  { bin: 'mosquitto_pub', env: 'MOSQUITTO_PUB', pkg: 'mosquitto-clients' },
  { bin: 'mosquitto_sub', env: 'MOSQUITTO_SUB', pkg: 'mosquitto-clients' },
  { bin: 'coap-client-notls', pkg: 'libcoap3-bin' },
  { bin: 'coap-server-notls', pkg: 'libcoap3-bin' },
  { bin: 'chromium', env: 'CHROMIUM_PATH', pkg: 'chromium' },
  // initdb and postgres for the history store's tests (test/helpers/postgres.ts); found via postgresBinDirs().
  { bin: 'postgres', pkg: 'postgresql' },
  // The SMTP server of the invitation mail tests (test/helpers/smtp.ts runs it as `python3 -m aiosmtpd`; the
  // package also installs this script, which is how its presence is seen).
  { bin: 'aiosmtpd', pkg: 'python3-aiosmtpd' },
];

/**
 * Where Debian installs these binaries. /usr/sbin (nats-server, mosquitto) is often missing from a non-root PATH,
 * and the helpers start them from there, so both are searched whatever PATH says.
 */
export const DEBIAN_DIRS: readonly string[] = ['/usr/sbin', '/usr/bin'];

/**
 * Debian's PostgreSQL server binaries live in /usr/lib/postgresql/<major>/bin, on no PATH
 * (utils/history/postgres-cluster.ts starts them from there, or from $POSTGRES_BIN_DIR). Listed at each call, so
 * the check after an install sees the directory the install created.
 */
export function postgresBinDirs(env: NodeJS.ProcessEnv): string[] {
  if (env.POSTGRES_BIN_DIR) return [env.POSTGRES_BIN_DIR];
  try {
    return readdirSync('/usr/lib/postgresql').map((major) => join('/usr/lib/postgresql', major, 'bin'));
  } catch {
    return [];
  }
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface LookupOptions {
  env: NodeJS.ProcessEnv;
  /** Searched after PATH; DEBIAN_DIRS and postgresBinDirs() by default. */
  extraDirs?: readonly string[];
  isExecutable?: (path: string) => boolean;
}

/** The peers that cannot be found: an override naming a missing file, or a name on neither PATH nor extraDirs. */
export function missingPeers(peers: readonly Peer[], options: LookupOptions): Peer[] {
  const isExec = options.isExecutable ?? executable;
  const dirs = [
    ...(options.env.PATH ?? '').split(delimiter).filter((d) => isAbsolute(d)),
    ...(options.extraDirs ?? [...DEBIAN_DIRS, ...postgresBinDirs(options.env)]),
  ];
  return peers.filter((peer) => {
    const override = peer.env === undefined ? undefined : options.env[peer.env];
    if (override) return !isExec(override);
    return !dirs.some((dir) => isExec(join(dir, peer.bin)));
  });
}

/** The Debian packages that ship the missing peers, each once, in table order. */
export function packagesFor(missing: readonly Peer[]): string[] {
  return [...new Set(missing.map((p) => p.pkg))];
}

export type Privilege = 'root' | 'sudo' | 'none';

export type Plan = { kind: 'ready' } | { kind: 'install'; commands: string[][] } | { kind: 'stop'; message: string };

/** The command a person runs by hand; also what the install plan runs (as root, or under sudo -n). */
export function installCommands(packages: readonly string[], sudo: boolean): string[][] {
  const prefix = sudo ? ['sudo', '-n'] : [];
  return [
    [...prefix, 'apt-get', 'update'],
    [...prefix, 'apt-get', 'install', '-y', '--no-install-recommends', ...packages],
  ];
}

/** The one message of a stopped run: what is missing, why it was not installed, the command to run. */
export function stopMessage(missing: readonly Peer[], reason: string, asRoot: boolean): string {
  const sudo = asRoot ? '' : 'sudo ';
  const command = `${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${packagesFor(missing).join(' ')}`;
  return (
    `The integration tests need real peers that are not installed: ${missing.map((p) => p.bin).join(', ')}. ` +
    `${reason}. Run:\n\n  ${command}\n\n` +
    'then npm test again (binaries elsewhere: NATS_SERVER_BIN, MOSQUITTO_BIN, MOSQUITTO_PUB, MOSQUITTO_SUB, ' +
    'CHROMIUM_PATH, POSTGRES_BIN_DIR; see docs/testing.md).'
  );
}

/** What to do about the missing peers, given who we run as and whether installing is allowed. */
export function plan(missing: readonly Peer[], privilege: Privilege, installAllowed: boolean): Plan {
  if (missing.length === 0) return { kind: 'ready' };
  const asRoot = privilege === 'root';
  if (!installAllowed) {
    return { kind: 'stop', message: stopMessage(missing, 'MYCELIUM_TEST_NO_INSTALL=1 is set', asRoot) };
  }
  if (privilege === 'none') {
    return {
      kind: 'stop',
      message: stopMessage(missing, 'Installing them needs root or sudo without a password', asRoot),
    };
  }
  return { kind: 'install', commands: installCommands(packagesFor(missing), privilege === 'sudo') };
}

/** Spawns a command with its output on the terminal; resolves to its exit status (null when it could not start). */
export type Runner = (command: readonly string[]) => number | null;

export const runInherit: Runner = ([cmd, ...args]) => {
  if (cmd === undefined) return null;
  const result = spawnSync(cmd, args, {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  return result.error === undefined ? result.status : null;
};

export function privilege(uid: number, sudoWorks: () => boolean): Privilege {
  if (uid === 0) return 'root';
  return sudoWorks() ? 'sudo' : 'none';
}

/** `sudo -n true` succeeds only when sudo will not ask for a password. */
export function sudoWithoutPassword(): boolean {
  const result = spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore', timeout: 5_000 });
  return result.error === undefined && result.status === 0;
}

export interface EnsureOptions extends LookupOptions {
  peers?: readonly Peer[];
  uid: number;
  sudoWorks: () => boolean;
  run: Runner;
  log: (line: string) => void;
}

/**
 * Checks, and installs if the plan says so; throws an Error with the one command to run when the peers are
 * missing and cannot be installed (or still missing after the install).
 */
export function ensurePeers(options: EnsureOptions): void {
  const peers = options.peers ?? PEERS;
  const env = options.env;
  if (env.MYCELIUM_TEST_NO_PEERS === '1') return;
  const missing = missingPeers(peers, options);
  if (missing.length === 0) return;
  const installAllowed = env.MYCELIUM_TEST_NO_INSTALL !== '1';
  // sudo is only asked when it would be used: nothing is spawned when everything is present or installing is off.
  const who: Privilege =
    options.uid === 0 ? 'root' : installAllowed ? privilege(options.uid, options.sudoWorks) : 'none';
  const decision = plan(missing, who, installAllowed);
  switch (decision.kind) {
    case 'ready':
      return;
    case 'stop':
      throw new PeersMissingError(decision.message);
    case 'install': {
      options.log(`Missing test peers: ${missing.map((p) => p.bin).join(', ')}; installing them.`);
      for (const command of decision.commands) {
        options.log(`$ ${command.join(' ')}`);
        const status = options.run(command);
        if (status !== 0) {
          throw new PeersMissingError(
            stopMessage(missing, `\`${command.join(' ')}\` failed (status ${status})`, who === 'root'),
          );
        }
      }
      const still = missingPeers(peers, options);
      if (still.length > 0) {
        throw new PeersMissingError(stopMessage(still, 'They are still missing after the install', who === 'root'));
      }
      return;
    }
  }
}

export class PeersMissingError extends Error {
  override name = 'PeersMissingError';
  constructor(message: string) {
    super(message);
    // The message is the whole story; a stack trace into this file would only hide the command to run.
    this.stack = `${this.name}: ${message}`;
  }
}

export default function setup(): void {
  try {
    ensurePeers({
      env: process.env,
      uid: process.getuid?.() ?? -1,
      sudoWorks: sudoWithoutPassword,
      run: runInherit,
      log: (line) => process.stdout.write(`${line}\n`),
    });
  } catch (err) {
    if (!(err instanceof PeersMissingError)) throw err;
    // Thrown from a globalSetup, the error comes out under a misleading "No test files found"; this is the one
    // message the run should end with.
    process.stderr.write(`\n${err.message}\n\n`);
    process.exit(1);
  }
}
