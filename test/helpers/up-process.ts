// `mycelium up` as a real child process in its own process group, on free loopback ports: the up tests, the
// garbage run and the deep-MQTT attack start it here. `bin/mycelium.js` runs up in its own process, so the
// child's pid is the pid of the process that holds every service (the one whose RSS the garbage run measures).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UpPorts } from '../../utils/fuzz/garbage-run.ts';
import { guard } from './child-process.ts';
import { waitFor } from './wait.ts';

const BIN = new URL('../../bin/mycelium.js', import.meta.url).pathname;
export const UP_READY_TIMEOUT_MS = 30_000;
/** Enough of stdout/stderr to show a crash's stack; older output is dropped so a long run stays bounded. */
const LOG_TAIL_CHARS = 256 * 1024;

export interface UpProcess {
  child: ChildProcess;
  pid: number;
  ports: UpPorts;
  home: string;
  out: { stdout: string; stderr: string };
  /** Resolves with `code <n>` or `signal <name>` once the process ended. */
  exited: Promise<string>;
  alive(): boolean;
  /** SIGKILL to the whole process group, then removes MYCELIUM_HOME. Safe to call twice. */
  kill(): Promise<void>;
}

function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function freeUdpPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createSocket('udp6');
    s.bind(0, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Free loopback ports for every service of up (UDP for CoAP). */
export async function freeUpPorts(): Promise<UpPorts> {
  return {
    broker: await freeTcpPort(),
    ws: await freeTcpPort(),
    mqtt: await freeTcpPort(),
    dashboard: await freeTcpPort(),
    coap: await freeUdpPort(),
  };
}

export interface UpOptions {
  /** Flags after the port flags, e.g. `--demo`, `--host 127.0.0.1`. */
  args?: string[];
  /** Ports to use (default: free ones). */
  ports?: UpPorts;
  /** Start node with --inspect on a loopback port the OS picks, so a test can force a GC (utils/fuzz/inspector.ts). */
  inspect?: boolean;
  /** Environment on top of this process's (e.g. `VITEST: ''` to run the compiled build instead of the sources). */
  env?: Record<string, string>;
}

/** Starts up without waiting for it (a test of a failed start reads `exited` and `out`). */
export async function launchUp(options: UpOptions = {}): Promise<UpProcess> {
  const home = mkdtempSync(join(tmpdir(), 'myc-up-'));
  const ports = options.ports ?? (await freeUpPorts());
  const args = [
    ...(options.inspect ? ['--inspect=127.0.0.1:0'] : []),
    BIN,
    'up',
    '--log-level',
    'warn',
    '--port',
    String(ports.broker),
    '--ws-port',
    String(ports.ws),
    '--coap-port',
    String(ports.coap),
    '--mqtt-port',
    String(ports.mqtt),
    '--dashboard-port',
    String(ports.dashboard),
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...options.env, MYCELIUM_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  guard(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => {
    out.stdout = (out.stdout + d.toString()).slice(-LOG_TAIL_CHARS);
  });
  child.stderr!.on('data', (d: Buffer) => {
    out.stderr = (out.stderr + d.toString()).slice(-LOG_TAIL_CHARS);
  });
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(signal === null ? `code ${code}` : `signal ${signal}`)),
  );
  let killed: Promise<void> | undefined;
  const up: UpProcess = {
    child,
    pid: child.pid!,
    ports,
    home,
    out,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    kill() {
      killed ??= (async () => {
        if (up.alive()) {
          try {
            process.kill(-up.pid, 'SIGKILL');
          } catch {
            child.kill('SIGKILL');
          }
          await exited;
        }
        rmSync(home, { recursive: true, force: true });
      })();
      return killed;
    },
  };
  return up;
}

/** Starts up and waits for its banner; fails at once with its stderr if it exits first. */
export async function startUp(options: UpOptions = {}): Promise<UpProcess> {
  const up = await launchUp(options);
  try {
    await waitFor(
      () => {
        if (!up.alive()) throw new Error(`mycelium up exited before its banner: ${up.out.stderr}`);
        return up.out.stdout.includes('Press Ctrl-C');
      },
      'the banner of mycelium up',
      UP_READY_TIMEOUT_MS,
    );
  } catch (err) {
    await up.kill();
    throw err;
  }
  return up;
}

/** `mycelium token` with the same MYCELIUM_HOME, as an operator would mint one. */
export function cliToken(up: UpProcess, role: string, sub: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, 'token', '--role', role, '--sub', sub, '--ttl', '1h'],
      { env: { ...process.env, MYCELIUM_HOME: up.home }, timeout: 20_000 },
      (err, stdout, stderr) => {
        if (err !== null) reject(new Error(`mycelium token failed: ${stderr}`, { cause: err }));
        else resolve(stdout.trim());
      },
    );
  });
}
