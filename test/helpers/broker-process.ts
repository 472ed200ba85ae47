// A broker in its own process, started through the real `mycelium broker` command.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/mycelium.js', import.meta.url));

export interface BrokerProcess {
  id: string;
  port: number;
  ws: string;
  http: string;
  child: ChildProcess;
  /** SIGKILL: the broker dies without closing anything (a crash). */
  kill(): Promise<void>;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
}

export async function spawnBroker(
  id: string,
  keyFile: string,
  extraArgs: string[] = [],
  timeoutMs = 15_000,
): Promise<BrokerProcess> {
  const child = spawn(
    process.execPath,
    [BIN, 'broker', '--port', '0', '--host', '127.0.0.1', '--broker-id', id, '--key-file', keyFile, ...extraArgs],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const ready = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker ${id} did not start within ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code) => reject(new Error(`broker ${id} exited with ${code}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; port?: number };
        if (rec.msg === 'broker listening' && rec.port) {
          clearTimeout(timer);
          resolve(rec.port);
        }
      } catch {
        // not a log line
      }
    });
  });
  let port: number;
  try {
    port = await ready;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    id,
    port,
    ws: `ws://127.0.0.1:${port}`,
    http: `http://127.0.0.1:${port}`,
    child,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
