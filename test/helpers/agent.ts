// [console] A real `mycelium agent` process (issue 12), in its own process group, killed as a group.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { guard } from './child-process.ts';

const BIN = fileURLToPath(new URL('../../bin/mycelium.js', import.meta.url));

export interface AgentProcess {
  child: ChildProcess;
  /** Every line the agent logged so far. */
  lines: string[];
  stop(): Promise<void>;
}

/** A commands.yaml in `dir` with the commands the console tests use. */
export function writeCommandsFile(dir: string, extra = ''): string {
  const file = join(dir, 'commands.yaml');
  writeFileSync(
    file,
    `echo: {argv: [echo, "{text}"], params: {text: "[A-Za-z0-9 <>/()._-]{0,200}"}}
uptime: {argv: [uptime]}
fail: {argv: [sh, -c, "echo oops >&2; exit 3"]}
tree: {argv: [sh, -c, "sleep 1000 & sleep 1000"], timeoutMs: 500}
sleep: {argv: [sleep, "{s}"], params: {s: "[0-9]{1,4}"}}
flood: {argv: [sh, -c, "yes 0123456789 | head -c 300000"]}
${extra}`,
  );
  return file;
}

export function startAgent(args: string[]): AgentProcess {
  const child = spawn(
    process.execPath,
    [BIN, 'agent', '--backoff-initial-ms', '50', '--backoff-max-ms', '300', ...args],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    },
  );
  guard(child);
  const lines: string[] = [];
  const collect = (buf: Buffer) =>
    lines.push(
      ...buf
        .toString()
        .split('\n')
        .filter((l) => l !== ''),
    );
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  return {
    child,
    lines,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      try {
        process.kill(-(child.pid as number), 'SIGTERM');
      } catch {
        return;
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-(child.pid as number), 'SIGKILL');
        } catch {
          // gone
        }
      }, 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
