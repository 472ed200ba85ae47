// Real servers started by tests (nats-server, mosquitto): stop them politely, and never let one outlive the run.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Socket } from 'node:net';

/** SIGTERM, then SIGKILL if the process has not exited within `timeoutMs`. */
export async function terminate(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Vitest ends its workers without running `process.on('exit')` hooks, so a server whose test never reached stop()
 * would outlive the run. A shell holds the read end of a pipe from this process: when this process dies the pipe
 * closes, `read` returns, and the shell kills the server. The watchdog goes away with the server.
 */
export function guard(child: ChildProcess): void {
  if (child.pid === undefined) return;
  const watchdog = spawn('/bin/sh', ['-c', 'read _; kill -KILL "$0" 2>/dev/null', String(child.pid)], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  watchdog.on('error', () => {});
  watchdog.unref();
  // A piped stdio stream is a Socket at run time; unref'd, the pipe does not hold this process open.
  (watchdog.stdin as Socket | null)?.unref();
  child.once('exit', () => watchdog.kill('SIGKILL'));
}
