// A real mosquitto broker for tests, and the mosquitto_pub / mosquitto_sub command-line clients as an
// independent MQTT peer. mosquitto cannot listen on port 0 (a `listener 0` is a unix socket), so a free port is
// chosen first and the start is retried on another port if someone took it meanwhile.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guard, terminate } from './child-process.ts';
import { waitFor } from './wait.ts';
import { freePort } from './ports.ts';

export const MOSQUITTO_BIN = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto';
export const MOSQUITTO_PUB = process.env.MOSQUITTO_PUB ?? '/usr/bin/mosquitto_pub';
export const MOSQUITTO_SUB = process.env.MOSQUITTO_SUB ?? '/usr/bin/mosquitto_sub';
const STDBUF = '/usr/bin/stdbuf';
export const MOSQUITTO_READY_TIMEOUT_MS = 10_000;
export const MOSQUITTO_STOP_TIMEOUT_MS = 5_000;
/** How long a mosquitto_pub may run before the test gives up on it. */
export const CLIENT_TIMEOUT_MS = 5_000;
const START_ATTEMPTS = 5;
const TCP_PROBE_INTERVAL_MS = 20;

export interface Mosquitto {
  port: number;
  /** Temporary directory holding the config and the extra files. */
  dir: string;
  url: string;
  /** SIGTERM, then wait for exit. Safe to call twice. */
  stop(): Promise<void>;
  /** Stops the broker (if running) and starts it again on the same port. */
  restart(): Promise<void>;
  /** Stops the broker but keeps the port and config, for a later restart(). */
  pause(): Promise<void>;
  /** SIGKILL, as a crash: no will messages, no goodbye to clients. restart() starts it again. */
  crash(): Promise<void>;
}

export interface MosquittoOptions {
  /** Extra lines for mosquitto.conf; `{dir}` is replaced by the fixture's temporary directory. */
  config?: string[];
  /** Files written into that directory before the start (password file, ACL file). */
  files?: Record<string, string>;
  allowAnonymous?: boolean;
}

export async function startMosquitto(options: MosquittoOptions = {}): Promise<Mosquitto> {
  const dir = await mkdtemp(join(tmpdir(), 'mosquitto-'));
  // Started as root, mosquitto drops to its own user before reading password and ACL files.
  await chmod(dir, 0o755);
  for (const [name, text] of Object.entries(options.files ?? {})) {
    await writeFile(join(dir, name), text, { mode: 0o644 });
  }
  const extraConfig = (options.config ?? []).map((l) => l.replaceAll('{dir}', dir));
  const configFor = async (port: number): Promise<string> => {
    const file = join(dir, 'mosquitto.conf');
    const lines = [
      `listener ${port} 127.0.0.1`,
      `allow_anonymous ${options.allowAnonymous ?? true}`,
      'persistence false',
      'log_dest stderr',
      ...extraConfig,
    ];
    await writeFile(file, `${lines.join('\n')}\n`);
    return file;
  };
  let child: ChildProcess | undefined;
  let port = 0;
  let lastErr: unknown;
  for (let attempt = 0; attempt < START_ATTEMPTS && child === undefined; attempt++) {
    port = await freePort();
    try {
      child = await launch(await configFor(port), port);
    } catch (err) {
      lastErr = err;
    }
  }
  if (child === undefined) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`mosquitto did not start after ${START_ATTEMPTS} attempts`, { cause: lastErr });
  }
  let stopped: Promise<void> | undefined;
  return {
    port,
    dir,
    url: `mqtt://127.0.0.1:${port}`,
    stop() {
      stopped ??= (async () => {
        if (child) await terminate(child, MOSQUITTO_STOP_TIMEOUT_MS);
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
    async pause() {
      if (child) await terminate(child, MOSQUITTO_STOP_TIMEOUT_MS);
    },
    async crash() {
      child?.kill('SIGKILL');
      if (child) await terminate(child, MOSQUITTO_STOP_TIMEOUT_MS);
    },
    async restart() {
      if (stopped !== undefined) throw new Error('mosquitto was stopped; restart() is only for a live fixture');
      if (child) await terminate(child, MOSQUITTO_STOP_TIMEOUT_MS);
      child = await launch(join(dir, 'mosquitto.conf'), port);
    },
  };
}

async function launch(configFile: string, port: number): Promise<ChildProcess> {
  const child = spawn(MOSQUITTO_BIN, ['-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.on('data', (c: Buffer) => {
    log = (log + c.toString()).slice(-4096);
  });
  await once(child, 'spawn');
  guard(child);
  const deadline = Date.now() + MOSQUITTO_READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited (code ${child.exitCode}):\n${log}`);
    if (await probe(port)) return child;
    if (Date.now() > deadline) {
      await terminate(child, MOSQUITTO_STOP_TIMEOUT_MS);
      throw new Error(
        `mosquitto did not accept connections on ${port} within ${MOSQUITTO_READY_TIMEOUT_MS} ms:\n${log}`,
      );
    }
    await new Promise((r) => setTimeout(r, TCP_PROBE_INTERVAL_MS));
  }
}

function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      s.destroy();
      resolve(false);
    });
  });
}

// ----------------------------------------------------------------------------------------------------------
// mosquitto_pub / mosquitto_sub

export interface ClientAuth {
  username?: string;
  password?: string;
  clientId?: string;
}

function authArgs(auth: ClientAuth): string[] {
  return [
    ...(auth.clientId ? ['-i', auth.clientId] : []),
    ...(auth.username ? ['-u', auth.username] : []),
    ...(auth.password ? ['-P', auth.password] : []),
  ];
}

export interface PubResult {
  code: number;
  stderr: string;
}

/** One QoS 1 publish with mosquitto_pub; resolves with its exit code and stderr (never rejects on refusal). */
export function mosquittoPub(port: number, topic: string, message: string, auth: ClientAuth = {}): Promise<PubResult> {
  return new Promise((resolve) => {
    execFile(
      MOSQUITTO_PUB,
      ['-h', '127.0.0.1', '-p', String(port), '-q', '1', '-t', topic, '-m', message, ...authArgs(auth)],
      { timeout: CLIENT_TIMEOUT_MS },
      (err, _stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stderr: stderr.toString() });
      },
    );
  });
}

/** A running mosquitto_sub printing `topic payload` lines (-v); debug lines (-d) show when it has subscribed. */
export class MosquittoSub {
  /** Received messages as `topic payload`. */
  readonly lines: string[] = [];
  /** Debug output: CONNACK, SUBACK, `Subscribed (mid: 1): 1` with the granted QoS (128 = refused). */
  readonly debug: string[] = [];
  stderr = '';
  private partial = '';
  private constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (c: Buffer) => {
      const text = this.partial + c.toString();
      const parts = text.split('\n');
      this.partial = parts.pop() ?? '';
      for (const line of parts) {
        if (/^(Client |Subscribed \(mid)/.test(line)) this.debug.push(line);
        else this.lines.push(line);
      }
    });
    child.stderr?.on('data', (c: Buffer) => {
      this.stderr += c.toString();
    });
  }

  /** Subscribes with QoS 1 and resolves once the SUBACK arrived (or the client exited). */
  static async start(port: number, filters: string[], auth: ClientAuth = {}): Promise<MosquittoSub> {
    const args = ['-h', '127.0.0.1', '-p', String(port), '-q', '1', '-v', '-d', ...authArgs(auth)];
    for (const f of filters) args.push('-t', f);
    // stdout to a pipe is block-buffered by stdio; stdbuf makes mosquitto_sub print each line as it happens.
    const child = spawn(STDBUF, ['-oL', MOSQUITTO_SUB, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const sub = new MosquittoSub(child);
    await once(child, 'spawn');
    guard(child);
    await waitFor(
      () => sub.exited || sub.debug.some((l) => l.startsWith('Subscribed (mid')),
      `mosquitto_sub to subscribe to ${filters.join(', ')}`,
      CLIENT_TIMEOUT_MS,
    );
    return sub;
  }

  /** The QoS granted per filter, from the SUBACK (128 = refused, [MQTT-3.9.3]). */
  get granted(): number[] {
    const line = this.debug.find((l) => l.startsWith('Subscribed (mid'));
    return line === undefined
      ? []
      : line
          .replace(/^Subscribed \(mid: \d+\): /, '')
          .split(', ')
          .map(Number);
  }

  async next(match: (line: string) => boolean, what: string, timeoutMs?: number): Promise<string> {
    return waitFor(() => this.lines.find(match), what, timeoutMs);
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  async stop(): Promise<void> {
    await terminate(this.child, MOSQUITTO_STOP_TIMEOUT_MS);
  }
}
