// Runs one command on the device, under limits the device sets (issue 12):
// - spawn, never a shell, unless the request is a shell line (the agent checked --allow-shell and the role);
// - its own process group (detached), so a timeout or cancel reaches everything it started: TERM to the group,
//   then KILL after --kill-grace-ms. When the command exits, what it left running in its group is killed too;
// - output decoded as UTF-8 (invalid bytes replaced) and capped at --max-output-bytes: beyond the cap it is read
//   and dropped, and the exit says `truncated`;
// - at most --max-concurrent commands at once: beyond that the answer is `busy`.
import { type ChildProcess, spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import type { ExecExit, ExecMode, ExecStatus, ExecStream } from '../protocol/console-messages.ts';
import { exitOf } from '../protocol/console-messages.ts';

export interface RunnerOptions {
  maxOutputBytes: number;
  killGraceMs: number;
  maxConcurrent: number;
  /** Used when a request names no timeout (and the command file none either). */
  defaultTimeoutMs: number;
  /** No request may run longer. */
  maxTimeoutMs: number;
  /** The shell of shell lines. */
  shell: string;
}

export const RUNNER_DEFAULTS: RunnerOptions = {
  maxOutputBytes: 1024 * 1024,
  killGraceMs: 2000,
  maxConcurrent: 8,
  defaultTimeoutMs: 60_000,
  maxTimeoutMs: 3_600_000,
  shell: '/bin/sh',
};

/**
 * The environment commands run with: the agent's, without its own settings (MYCELIUM_*: the node token may be
 * one, and a command's output goes to operators).
 */
export function commandEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!k.startsWith('MYCELIUM_')) out[k] = v;
  return out;
}

/** Largest data of one exec-output frame, in bytes read (a chunk is split beyond it). */
export const CHUNK_BYTES = 16 * 1024;

export interface RunRequest {
  id: string;
  argv?: string[];
  shellLine?: string;
  mode: ExecMode;
  timeoutMs?: number;
}

/** Where a run reports: output chunks (numbered by the runner) and, once, the exit. */
export interface RunSink {
  output(id: string, seq: number, stream: ExecStream, data: string): void;
  exit(exit: ExecExit): void;
}

export interface RunHandle {
  cancel(): void;
  readonly pid: number | undefined;
}

export class Runner {
  private readonly runs = new Map<string, Run>();
  readonly options: RunnerOptions;
  /** Built once: reading process.env is a walk over the environment (a measurable share of a request). */
  private readonly env = commandEnv();

  constructor(options: Partial<RunnerOptions> = {}) {
    this.options = { ...RUNNER_DEFAULTS, ...options };
  }

  get running(): number {
    return this.runs.size;
  }

  /** True when another command may start now (the PTY sessions count too: `extra`). */
  hasRoom(extra = 0): boolean {
    return this.runs.size + extra < this.options.maxConcurrent;
  }

  has(id: string): boolean {
    return this.runs.has(id);
  }

  /** Starts a command; the sink gets its output and exit. `busy` past the concurrency cap. */
  start(req: RunRequest, sink: RunSink, extra = 0): RunHandle | 'busy' {
    if (!this.hasRoom(extra)) return 'busy';
    const run = new Run(req, sink, this.options, this.env, () => this.runs.delete(req.id));
    this.runs.set(req.id, run);
    run.start();
    return run;
  }

  cancel(id: string): boolean {
    const run = this.runs.get(id);
    run?.cancel();
    return run !== undefined;
  }

  /** Kills every command's group at once (the agent stops). */
  stop(): void {
    for (const run of this.runs.values()) run.kill('SIGKILL');
  }
}

class Run implements RunHandle {
  private child?: ChildProcess;
  private readonly started = Date.now();
  private seq = 0;
  private bytes = 0;
  private truncated = false;
  /** Why we ended it, if we did. */
  private endedBy?: 'timeout' | 'cancelled';
  private timer?: NodeJS.Timeout;
  private killTimer?: NodeJS.Timeout;
  private done = false;

  constructor(
    private readonly req: RunRequest,
    private readonly sink: RunSink,
    private readonly options: RunnerOptions,
    private readonly env: NodeJS.ProcessEnv,
    private readonly onDone: () => void,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): void {
    const { req, options } = this;
    const [file, ...args] = req.shellLine !== undefined ? [options.shell, '-c', req.shellLine] : (req.argv ?? []);
    const quiet = req.mode === 'no-return';
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        detached: true,
        stdio: quiet ? 'ignore' : ['ignore', 'pipe', 'pipe'],
        env: this.env,
      });
    } catch (err) {
      return this.finish('error', null, null, (err as Error).message);
    }
    this.child = child;
    const timeout = Math.min(req.timeoutMs ?? options.defaultTimeoutMs, options.maxTimeoutMs);
    this.timer = setTimeout(() => this.end('timeout'), timeout);
    child.once('error', (err: NodeJS.ErrnoException) => this.finish('error', null, null, err.code ?? err.message));
    if (!quiet) {
      this.pipe(child, 'stdout');
      this.pipe(child, 'stderr');
    }
    // `close` waits for the pipes, which a left-behind grandchild may hold: on the leader's exit the group's rest
    // is killed after the grace, so the pipes close and limits hold.
    child.once('exit', () => {
      this.killTimer ??= setTimeout(() => this.kill('SIGKILL'), options.killGraceMs);
    });
    child.once('close', (code, signal) => {
      const status: ExecStatus = this.endedBy ?? (code === 0 ? 'ok' : 'ng');
      this.finish(status, code, signal);
    });
    if (quiet) {
      // Start and forget: the requester learns it started; the command keeps its limits (timeout, group kill).
      this.sink.exit(exitOf(req.id, 'ok', { reason: 'started', durationMs: Date.now() - this.started }));
    }
  }

  private pipe(child: ChildProcess, stream: 'stdout' | 'stderr'): void {
    const decoder = new StringDecoder('utf8');
    const source = child[stream];
    source?.on('data', (buf: Buffer) => {
      if (this.done) return;
      const room = this.options.maxOutputBytes - this.bytes;
      if (room <= 0) {
        this.truncated = true;
        return;
      }
      const kept = buf.length > room ? buf.subarray(0, room) : buf;
      if (kept.length < buf.length) this.truncated = true;
      this.bytes += kept.length;
      if (this.req.mode !== 'output') return;
      for (let at = 0; at < kept.length; at += CHUNK_BYTES) {
        const text = decoder.write(kept.subarray(at, at + CHUNK_BYTES));
        if (text.length > 0) this.sink.output(this.req.id, this.seq++, stream, text);
      }
    });
    source?.on('end', () => {
      const rest = decoder.end();
      if (rest.length > 0 && this.req.mode === 'output' && !this.done) {
        this.sink.output(this.req.id, this.seq++, stream, rest);
      }
    });
  }

  cancel(): void {
    this.end('cancelled');
  }

  /** TERM to the whole group, KILL after the grace. */
  private end(why: 'timeout' | 'cancelled'): void {
    if (this.done || this.endedBy !== undefined) return;
    this.endedBy = why;
    this.kill('SIGTERM');
    this.killTimer = setTimeout(() => this.kill('SIGKILL'), this.options.killGraceMs);
  }

  kill(signal: NodeJS.Signals): void {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    try {
      // A negative pid is the process group (detached: the child leads its own group).
      process.kill(-pid, signal);
    } catch {
      // The group is gone already.
    }
  }

  private finish(status: ExecStatus, code: number | null, signal: string | null, reason?: string): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    clearTimeout(this.killTimer);
    // Anything still alive in the group goes now: the command's limits end with it.
    this.kill('SIGKILL');
    this.onDone();
    if (this.req.mode === 'no-return') return;
    this.sink.exit(
      exitOf(this.req.id, status, {
        code,
        signal,
        truncated: this.truncated,
        durationMs: Date.now() - this.started,
        bytes: this.bytes,
        ...(reason === undefined ? {} : { reason: reason.slice(0, 256) }),
      }),
    );
  }
}
