// A real nats-server for tests, on a port the OS picks. The first start uses `-p -1` and reads the port from the
// server's own log, so no other process can take the port between choosing and binding it.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guard, terminate } from './child-process.ts';

export const NATS_SERVER_READY_TIMEOUT_MS = 10_000;
export const NATS_SERVER_STOP_TIMEOUT_MS = 5_000;
const TCP_PROBE_INTERVAL_MS = 20;
/** Debian installs the binary here, and /usr/sbin is often missing from a non-root PATH. */
const FALLBACK_BIN = '/usr/sbin/nats-server';
const LISTENING = /Listening for client connections on [^\s]+:(\d+)/;
/** Enough of the log to explain a failed start. */
const LOG_TAIL_CHARS = 8_192;

export interface NatsServerOptions {
  /** Enables JetStream with a fresh store directory, removed by stop(). */
  jetstream?: boolean;
  readyTimeoutMs?: number;
  /** Extra command-line arguments. */
  args?: string[];
}

export interface NatsServer {
  url: string;
  port: number;
  /** JetStream store directory; kept across restart(). */
  storeDir?: string;
  /** SIGTERM, then wait for exit. Safe to call twice. */
  stop(): Promise<void>;
  /** Stops the server and starts a new one on the same port (and the same JetStream store). */
  restart(): Promise<void>;
  /** SIGKILL, as a crash: no flush, no goodbye to clients. restart() starts it again. */
  crash(): Promise<void>;
}

/** server -> the process that kills it if this test process dies first. */
/** The default binary that spawned last time, so later starts skip a failing PATH lookup. */
let resolvedBin: string | undefined;

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const readyTimeoutMs = options.readyTimeoutMs ?? NATS_SERVER_READY_TIMEOUT_MS;
  const storeDir = options.jetstream ? await mkdtemp(join(tmpdir(), 'nats-js-')) : undefined;
  const argsFor = (port: number): string[] => [
    '-a',
    '127.0.0.1',
    '-p',
    String(port),
    ...(storeDir === undefined ? [] : ['-js', '-sd', storeDir]),
    ...(options.args ?? []),
  ];

  let child: ChildProcess;
  let port: number;
  try {
    ({ child, port } = await launch(argsFor(-1), readyTimeoutMs));
  } catch (err) {
    if (storeDir !== undefined) await rm(storeDir, { recursive: true, force: true });
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    stop() {
      stopping ??= (async () => {
        await terminate(child, NATS_SERVER_STOP_TIMEOUT_MS);
        if (storeDir !== undefined) await rm(storeDir, { recursive: true, force: true });
      })();
      return stopping;
    },
    async crash() {
      child.kill('SIGKILL');
      await terminate(child, NATS_SERVER_STOP_TIMEOUT_MS);
    },
    async restart() {
      if (stopping !== undefined) throw new Error('nats-server was stopped; restart() is only for a running server');
      await terminate(child, NATS_SERVER_STOP_TIMEOUT_MS);
      ({ child } = await launch(argsFor(port), readyTimeoutMs));
    },
  };
}

async function launch(args: string[], readyTimeoutMs: number): Promise<{ child: ChildProcess; port: number }> {
  const deadline = Date.now() + readyTimeoutMs;
  const child = await spawnServer(args);
  try {
    const port = await listeningPort(child, deadline, readyTimeoutMs);
    await waitForTcp(port, deadline, readyTimeoutMs);
    return { child, port };
  } catch (err) {
    await terminate(child, NATS_SERVER_STOP_TIMEOUT_MS);
    throw err;
  }
}

async function spawnServer(args: string[]): Promise<ChildProcess> {
  const explicit = process.env.NATS_SERVER_BIN;
  const candidates = explicit ? [explicit] : resolvedBin ? [resolvedBin] : ['nats-server', FALLBACK_BIN];
  let lastErr: unknown;
  for (const bin of candidates) {
    const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      await once(child, 'spawn');
    } catch (err) {
      lastErr = err;
      if (err instanceof Error && 'code' in err && err.code === 'ENOENT') continue;
      throw err;
    }
    if (!explicit) resolvedBin = bin;
    guard(child);
    return child;
  }
  throw new Error(`nats-server not found (tried ${candidates.join(', ')}); set NATS_SERVER_BIN`, { cause: lastErr });
}

/** Resolves with the client port the server logs once its listener is bound. */
function listeningPort(child: ChildProcess, deadline: number, readyTimeoutMs: number): Promise<number> {
  const stderr = child.stderr;
  if (stderr === null) return Promise.reject(new Error('nats-server stderr is not piped'));
  return new Promise((resolve, reject) => {
    let log = '';
    const onData = (chunk: Buffer): void => {
      log = (log + chunk.toString('utf8')).slice(-LOG_TAIL_CHARS);
      const match = LISTENING.exec(log);
      if (match !== null) finish(() => resolve(Number(match[1])));
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      finish(() => reject(new Error(`nats-server exited (code ${code}, signal ${signal}) before listening:\n${log}`)));
    };
    const timer = setTimeout(() => {
      finish(() => reject(new Error(`nats-server did not listen within ${readyTimeoutMs} ms:\n${log}`)));
    }, deadline - Date.now());
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      stderr.off('data', onData);
      child.off('exit', onExit);
      // Keep reading so a full pipe can never block the server's logging.
      stderr.resume();
      settle();
    };
    stderr.on('data', onData);
    child.once('exit', onExit);
  });
}

async function waitForTcp(port: number, deadline: number, readyTimeoutMs: number): Promise<void> {
  for (;;) {
    const err = await probe(port);
    if (err === undefined) return;
    if (Date.now() >= deadline) {
      throw new Error(`nats-server on port ${port} did not accept connections within ${readyTimeoutMs} ms`, {
        cause: err,
      });
    }
    await new Promise((resolve) => setTimeout(resolve, TCP_PROBE_INTERVAL_MS));
  }
}

function probe(port: number): Promise<Error | undefined> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (err) => {
      socket.destroy();
      resolve(err);
    });
  });
}
