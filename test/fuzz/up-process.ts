// `mycelium up --demo` as a real child process in its own process group, on free loopback ports, for the
// garbage run. `bin/mycelium.js` loads tsx in-process and runs up there, so the child's pid is the pid of the
// process that holds every service (the one whose RSS is measured).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UpPorts } from '../../utils/fuzz/garbage-run.ts';
import { guard } from '../helpers/child-process.ts';
import { waitFor } from '../helpers/wait.ts';

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
  /** Resolves with the exit code or signal once the process ended. */
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

export interface UpOptions {
  extraArgs?: string[];
  /** Start node with --inspect on a loopback port the OS picks, so a test can force a GC (utils/fuzz/inspector.ts). */
  inspect?: boolean;
}

export async function startUp(options: UpOptions = {}): Promise<UpProcess> {
  const extraArgs = options.extraArgs ?? [];
  const home = mkdtempSync(join(tmpdir(), 'myc-fuzz-up-'));
  const ports: UpPorts = {
    broker: await freeTcpPort(),
    ws: await freeTcpPort(),
    mqtt: await freeTcpPort(),
    dashboard: await freeTcpPort(),
    coap: await freeUdpPort(),
  };
  const args = [
    ...(options.inspect ? ['--inspect=127.0.0.1:0'] : []),
    BIN,
    'up',
    '--demo',
    '--host',
    '127.0.0.1',
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
    ...extraArgs,
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, MYCELIUM_HOME: home },
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
  try {
    await waitFor(
      () => {
        if (!up.alive()) throw new Error(`mycelium up exited before its banner: ${out.stderr}`);
        return out.stdout.includes('Press Ctrl-C');
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
