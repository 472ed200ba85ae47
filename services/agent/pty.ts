// The agent's pseudo-terminal (issue 12, `--allow-pty`): a thin wrapper over node-pty, which is an
// optionalDependency because it compiles a native addon. A platform where it did not build still installs and
// runs the agent: `openPty` answers null and the agent refuses `pty-open` with a reason instead of crashing.
// node-pty is loaded with require (it is CommonJS) on the first call, once, so `openPty` stays synchronous and an
// agent that never opens a PTY never loads the addon.
import { createRequire } from 'node:module';

/** The part of node-pty's IPty this module uses (its types are not importable when the package is absent). */
interface NodePty {
  onData(cb: (data: string) => void): { dispose(): void };
  onExit(cb: (e: { exitCode: number; signal?: number }) => void): { dispose(): void };
  write(data: string): void;
  resize(cols: number, rows: number): void;
  kill(signal?: string): void;
  readonly pid: number;
}

interface NodePtyModule {
  spawn(
    file: string,
    args: string[],
    options: { name?: string; cols: number; rows: number; cwd?: string; env?: Record<string, string> },
  ): NodePty;
}

export interface PtyOptions {
  /** The program to run; default `$SHELL`, else `/bin/sh`. */
  shell?: string;
  cols: number;
  rows: number;
  cwd?: string;
  /** The whole environment of the shell (default: the agent's without MYCELIUM_* variables, with TERM set). */
  env?: Record<string, string>;
}

export interface PtyExit {
  code: number | null;
  /** The signal's name when one ended the shell (`SIGKILL`), else null. */
  signal: string | null;
}

export interface PtySession {
  readonly pid: number;
  onData(cb: (data: string) => void): void;
  onExit(cb: (exit: PtyExit) => void): void;
  write(data: string): void;
  resize(cols: number, rows: number): void;
  /** Ends the shell (SIGHUP, as a terminal closing would); safe to call after it exited. */
  kill(): void;
}

/** Terminal sizes outside this are refused by the frame schema already; clamped here too (defence in depth). */
export const PTY_MIN_SIZE = 1;
export const PTY_MAX_COLS = 1000;
export const PTY_MAX_ROWS = 500;

/**
 * Output is gathered for this long before it is handed on: a terminal writes in many small pieces (one per
 * keystroke's echo, one per line of a listing), and each piece would be a frame on every link to the browser.
 * Short enough that typing feels immediate.
 */
export const PTY_COALESCE_MS = 8;
/** Gathered output is handed on at once past this many characters (frames stay far below their 64 KB cap). */
export const PTY_COALESCE_CHARS = 16 * 1024;

/** How long after node-pty reports the exit its last output may still arrive. */
export const PTY_EXIT_GRACE_MS = 50;

let loaded: NodePtyModule | null | undefined;

/** node-pty, or null when it is not installed or its addon does not load here. */
export function loadNodePty(): NodePtyModule | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = createRequire(import.meta.url)('node-pty') as NodePtyModule;
  } catch {
    loaded = null;
  }
  return loaded;
}

/** Whether this agent can offer a PTY at all (advertised in its console capability). */
export function ptyAvailable(): boolean {
  return loadNodePty() !== null;
}

function clampSize(n: number, max: number): number {
  return Number.isFinite(n) ? Math.min(max, Math.max(PTY_MIN_SIZE, Math.floor(n))) : PTY_MIN_SIZE;
}

/** Signal numbers node-pty reports, by name (Linux numbering; only the ones a shell commonly dies of). */
const SIGNAL_NAMES: Record<number, string> = {
  1: 'SIGHUP',
  2: 'SIGINT',
  3: 'SIGQUIT',
  6: 'SIGABRT',
  9: 'SIGKILL',
  13: 'SIGPIPE',
  15: 'SIGTERM',
};

/**
 * The agent's environment for its shell, without the agent's own settings (`MYCELIUM_*`: its token may be one of
 * them; whoever has the terminal has a shell, not the agent's credentials), with TERM for xterm.js.
 */
export function shellEnv(from: NodeJS.ProcessEnv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(from)) if (v !== undefined && !k.startsWith('MYCELIUM_')) env[k] = v;
  env.TERM = 'xterm-256color';
  return env;
}

/**
 * Starts a shell on a new pseudo-terminal; null when node-pty is unavailable or the spawn failed (a missing
 * shell, say). Data is UTF-8 text (node-pty decodes it), given to every `onData` listener.
 */
export function openPty(options: PtyOptions): PtySession | null {
  const pty = loadNodePty();
  if (pty === null) return null;
  const env = options.env ?? shellEnv(process.env);
  let proc: NodePty;
  try {
    proc = pty.spawn(options.shell ?? process.env.SHELL ?? '/bin/sh', [], {
      name: 'xterm-256color',
      cols: clampSize(options.cols, PTY_MAX_COLS),
      rows: clampSize(options.rows, PTY_MAX_ROWS),
      cwd: options.cwd ?? process.env.HOME ?? '/',
      env,
    });
  } catch {
    return null;
  }
  let exited = false;
  const dataListeners: ((data: string) => void)[] = [];
  let pending = '';
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (pending === '') return;
    const data = pending;
    pending = '';
    for (const cb of dataListeners) cb(data);
  };
  proc.onData((data) => {
    pending += data;
    if (pending.length >= PTY_COALESCE_CHARS) flush();
    else timer ??= setTimeout(flush, PTY_COALESCE_MS);
  });
  proc.onExit(() => {
    exited = true;
  });
  return {
    pid: proc.pid,
    onData: (cb) => {
      dataListeners.push(cb);
    },
    onExit: (cb) => {
      proc.onExit(({ exitCode, signal }) => {
        // node-pty may report the exit before it has read the last output from the terminal: wait a moment for
        // it, then hand on what came and only then the exit. (Output written in the instant before the exit can
        // still be lost by node-pty itself when the terminal closes; a terminal's user has seen it by then.)
        setTimeout(() => {
          flush();
          const name = signal ? (SIGNAL_NAMES[signal] ?? `SIG${signal}`) : null;
          cb({ code: name === null ? exitCode : null, signal: name });
        }, PTY_EXIT_GRACE_MS);
      });
    },
    write: (data) => {
      if (!exited) proc.write(data);
    },
    resize: (cols, rows) => {
      // Resizing a terminal whose process is gone throws in node-pty (EBADF): nothing to resize then.
      if (!exited) proc.resize(clampSize(cols, PTY_MAX_COLS), clampSize(rows, PTY_MAX_ROWS));
    },
    kill: () => {
      if (exited) return;
      try {
        proc.kill('SIGHUP');
      } catch {
        // Already gone between the check and the signal.
      }
    },
  };
}
