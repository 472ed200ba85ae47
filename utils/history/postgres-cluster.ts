// A throwaway PostgreSQL cluster from the Debian `postgresql` package, for tests (test/helpers/postgres.ts) and
// `npm run bench:history`: initdb into a temporary directory, postgres on a free loopback port with its unix
// socket in that directory, in its own process group; stop() shuts it down and removes the directory.
//
// postgres cannot listen on port 0 and name the port it got, so a free port is chosen first (bind 0, close) and the
// start is retried on another port when someone took it meanwhile. initdb and postgres refuse to run as root: as
// root they run as the `postgres` user (the package creates it), or `nobody`, and the directory is theirs.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';

export const POSTGRES_READY_TIMEOUT_MS = 30_000;
export const POSTGRES_STOP_TIMEOUT_MS = 10_000;
const INITDB_TIMEOUT_MS = 120_000;
const START_ATTEMPTS = 5;
const READY_POLL_MS = 25;
const LOG_TAIL_CHARS = 8_192;
/** Where Debian installs the server binaries: /usr/lib/postgresql/<major>/bin (not on PATH). */
const DEBIAN_ROOT = '/usr/lib/postgresql';
/** Line 8 of postmaster.pid is the postmaster's status; "ready" once it accepts connections (pidfile.h). */
const PIDFILE_STATUS_LINE = 7;

export interface PostgresClusterOptions {
  /** `-c name=value` settings for postgres, e.g. `{ fsync: 'off' }` for tests. */
  settings?: Record<string, string>;
  /** Directory holding initdb and postgres; default: $POSTGRES_BIN_DIR, else the newest under /usr/lib/postgresql. */
  binDir?: string;
  readyTimeoutMs?: number;
}

export interface PostgresCluster {
  port: number;
  /** The postmaster's pid. Its backends are its children, but each calls setsid(): they are not in its group. */
  readonly pid: number;
  /** The temporary directory: data in `data/`, the unix socket beside it. */
  dir: string;
  /** Superuser `postgres`, trust authentication on loopback only. */
  url(database?: string): string;
  /** Fast shutdown (SIGINT), SIGKILL after a timeout, then the directory is removed. Safe twice. */
  stop(): Promise<void>;
  /** SIGKILL to the postmaster, as a crash (its backends quit when they see it gone); restart() brings it back. */
  crash(): Promise<void>;
  /** Starts postgres again (same port and data) after crash(). */
  restart(): Promise<void>;
}

export function postgresBinDir(): string {
  const fromEnv = process.env.POSTGRES_BIN_DIR;
  if (fromEnv) return fromEnv;
  let majors: number[] = [];
  try {
    majors = readdirSync(DEBIAN_ROOT)
      .map(Number)
      .filter((n) => Number.isInteger(n));
  } catch {
    // No Debian layout: fall through to the error below.
  }
  if (majors.length === 0) {
    throw new Error(`no PostgreSQL server under ${DEBIAN_ROOT}; apt-get install postgresql, or set POSTGRES_BIN_DIR`);
  }
  return join(DEBIAN_ROOT, String(Math.max(...majors)), 'bin');
}

interface RunAs {
  uid: number;
  gid: number;
}

/** Root must hand the cluster to an unprivileged user; anyone else runs it as themselves. */
function unprivilegedUser(): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n');
  for (const name of ['postgres', 'nobody']) {
    const fields = passwd.find((line) => line.startsWith(`${name}:`))?.split(':');
    if (fields !== undefined) return { uid: Number(fields[2]), gid: Number(fields[3]) };
  }
  throw new Error('running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as');
}

export async function startPostgresCluster(options: PostgresClusterOptions = {}): Promise<PostgresCluster> {
  const binDir = options.binDir ?? postgresBinDir();
  const runAs = unprivilegedUser();
  const dir = await mkdtemp(join(tmpdir(), 'mycelium-pg-'));
  const dataDir = join(dir, 'data');
  const readyTimeoutMs = options.readyTimeoutMs ?? POSTGRES_READY_TIMEOUT_MS;
  let child: ChildProcess | undefined;
  let port = 0;
  try {
    if (runAs !== undefined) await chown(dir, runAs.uid, runAs.gid);
    await initdb(binDir, dataDir, runAs);
    let lastErr: unknown;
    for (let attempt = 0; attempt < START_ATTEMPTS && child === undefined; attempt++) {
      port = await freePort();
      try {
        child = await launch({ binDir, dir, dataDir, port, runAs, settings: options.settings ?? {}, readyTimeoutMs });
      } catch (err) {
        lastErr = err;
      }
    }
    if (child === undefined)
      throw new Error(`postgres did not start after ${START_ATTEMPTS} attempts`, { cause: lastErr });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  let stopped: Promise<void> | undefined;
  return {
    port,
    get pid() {
      return child?.pid ?? 0;
    },
    dir,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    stop() {
      stopped ??= (async () => {
        if (child !== undefined) await terminateGroup(child, 'SIGINT', POSTGRES_STOP_TIMEOUT_MS);
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
    async crash() {
      if (child !== undefined) await terminateGroup(child, 'SIGKILL', POSTGRES_STOP_TIMEOUT_MS);
    },
    async restart() {
      if (stopped !== undefined) throw new Error('the cluster was stopped; restart() is only for a live one');
      if (child !== undefined) await terminateGroup(child, 'SIGINT', POSTGRES_STOP_TIMEOUT_MS);
      child = await launch({ binDir, dir, dataDir, port, runAs, settings: options.settings ?? {}, readyTimeoutMs });
    },
  };
}

function initdb(binDir: string, dataDir: string, runAs: RunAs | undefined): Promise<void> {
  const args = ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C.UTF-8', '--no-sync'];
  return new Promise((resolve, reject) => {
    execFile(
      join(binDir, 'initdb'),
      args,
      { timeout: INITDB_TIMEOUT_MS, ...runAs, env: { ...process.env, LC_ALL: 'C.UTF-8' } },
      (err, _stdout, stderr) => {
        if (err === null) resolve();
        else reject(new Error(`initdb failed: ${stderr.toString().slice(-LOG_TAIL_CHARS)}`, { cause: err }));
      },
    );
  });
}

interface LaunchOptions {
  binDir: string;
  dir: string;
  dataDir: string;
  port: number;
  runAs: RunAs | undefined;
  settings: Record<string, string>;
  readyTimeoutMs: number;
}

async function launch(o: LaunchOptions): Promise<ChildProcess> {
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    port: String(o.port),
    unix_socket_directories: o.dir,
    ...o.settings,
  };
  const args = ['-D', o.dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  // Its own process group (detached), so a Ctrl-C meant for a bench or vitest does not reach it: stop() shuts it
  // down in order. (Its backends leave the group anyway: each calls setsid(), and quits when the postmaster dies.)
  const child = spawn(join(o.binDir, 'postgres'), args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
    ...o.runAs,
  });
  let log = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    log = (log + chunk.toString('utf8')).slice(-LOG_TAIL_CHARS);
  });
  await once(child, 'spawn');
  guardGroup(child, o.dir);
  const deadline = Date.now() + o.readyTimeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`postgres exited (code ${child.exitCode}) on port ${o.port}:\n${log}`);
    }
    if (await isReady(o.dataDir)) return child;
    if (Date.now() > deadline) {
      await terminateGroup(child, 'SIGKILL', POSTGRES_STOP_TIMEOUT_MS);
      throw new Error(`postgres was not ready within ${o.readyTimeoutMs} ms:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
}

async function isReady(dataDir: string): Promise<boolean> {
  try {
    const lines = (await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n');
    return lines[PIDFILE_STATUS_LINE]?.trim() === 'ready';
  } catch {
    return false;
  }
}

/** Signals the postmaster's group, SIGKILL if it has not exited within `timeoutMs` (fast shutdown ends backends). */
async function terminateGroup(child: ChildProcess, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  const kill = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-(child.pid as number), sig);
    } catch {
      // The group is already gone.
    }
  };
  kill(signal);
  const timer = setTimeout(() => kill('SIGKILL'), timeoutMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A cluster must not outlive the process that started it (a vitest worker is ended without exit hooks, a bench
 * may be killed). A shell holds the read end of a pipe from this process; when this process dies the pipe closes,
 * `read` returns, and the shell kills the postmaster and removes the directory (a second later, once
 * the backends are gone). The same trick as test/helpers/child-process.ts.
 */
function guardGroup(child: ChildProcess, dir: string): void {
  if (child.pid === undefined) return;
  // dash's kill takes no `--`: a negative pid names the group.
  const script = 'read _; kill -KILL "-$0" 2>/dev/null; sleep 1; rm -rf "$1"';
  const watchdog = spawn('/bin/sh', ['-c', script, String(child.pid), dir], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  watchdog.on('error', () => {});
  watchdog.unref();
  (watchdog.stdin as Socket | null)?.unref();
  child.once('exit', () => watchdog.kill('SIGKILL'));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
