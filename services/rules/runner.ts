// One rule's worker thread, seen from the service: it starts the worker from the compiled code, hands it
// events (in order per node, several nodes at once), answers its ctx calls through the host, and enforces the
// limits: memory through the worker's resourceLimits, time through the watchdog (a segment of rule code that
// runs past the limit gets the worker terminated, its invocation counted as `time-limit`, and a fresh worker
// for the next event), and a wall-clock bound on a whole invocation (one stuck on I/O is given up).
// A rule never runs on the service's own thread, so a looping rule costs the others one core at most.
import { Worker } from 'node:worker_threads';
import { KeyedQueue } from './keyed-queue.ts';
import type { RuleEvent } from './rule.ts';
import type { CallOp, FromWorker, ToWorker, WorkerData } from './worker.ts';

export interface RunnerLimits {
  /** Per-invocation CPU limit (ms) unless the rule asks for less or more (up to maxTimeLimitMs). */
  timeLimitMs: number;
  maxTimeLimitMs: number;
  /** The worker's old-generation heap limit (MB). */
  memoryMb: number;
  /** Longest wall time of one invocation, I/O included. */
  maxWaitMs: number;
  /** Longest time to load a rule file (its top-level code). */
  loadTimeoutMs: number;
  /** Invocations of one rule in flight at once (different nodes). */
  concurrency: number;
  /** Events waiting for one rule at most; more are dropped and counted. */
  maxQueued: number;
}

export type RunStatus = 'ok' | 'skipped' | 'error' | 'time-limit' | 'memory' | 'exited' | 'timeout' | 'dropped';

export interface RunOutcome {
  status: RunStatus;
  error?: string;
  /** Wall time from the start of the invocation to its end. */
  ms: number;
  /** Time the rule's code ran (measured in the worker; the limit when it was stopped). */
  cpuMs: number;
}

/** What a rule's worker asks of the service. */
export interface RuleHost {
  call(op: CallOp, args: unknown[]): Promise<unknown>;
  log(level: 'info' | 'warn' | 'error', message: string, detail?: unknown): void;
  saveState(key: string, value: unknown): void;
  /** The rule's state now (a restarted worker starts from it). */
  state(): Record<string, unknown>;
}

interface Invocation {
  resolve: (o: RunOutcome) => void;
  started: number;
  timer: NodeJS.Timeout;
}

type Loaded = { ok: true; definition: unknown } | { ok: false; message: string };

/** Checks every running worker's current segment against its limit; one timer for all of them. */
export class Watchdog {
  private readonly watched = new Set<RuleWorker>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly tickMs = 5) {}

  add(w: RuleWorker): void {
    this.watched.add(w);
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.tickMs);
      this.timer.unref();
    }
  }

  remove(w: RuleWorker): void {
    this.watched.delete(w);
    if (this.watched.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    const t = performance.timeOrigin + performance.now();
    for (const w of this.watched) w.check(t);
  }
}

const now = () => performance.timeOrigin + performance.now();

export class RuleWorker {
  private worker?: Worker;
  private readonly busyBuffer = new SharedArrayBuffer(16);
  private readonly busy = new Float64Array(this.busyBuffer);
  private readonly invocations = new Map<number, Invocation>();
  private readonly queue: KeyedQueue;
  private nextInv = 0;
  /** Why the current worker was terminated (set before terminate(), read in the exit handler). */
  private killed?: { status: RunStatus; inv: number; error: string };
  private starting?: Promise<Loaded>;
  private stopped = false;
  /** The limit this rule runs under (its own timeLimitMs, capped). */
  limitMs: number;
  /** Events dropped because the queue was full. */
  dropped = 0;
  /** Workers started after a crash or a limit. */
  restarts = 0;

  constructor(
    readonly name: string,
    private readonly code: string,
    private readonly limits: RunnerLimits,
    private readonly host: RuleHost,
    private readonly watchdog: Watchdog,
  ) {
    this.limitMs = limits.timeLimitMs;
    this.queue = new KeyedQueue(limits.concurrency, limits.maxQueued);
  }

  /** Starts the worker and waits for the rule's definition (or why it cannot load). */
  load(): Promise<Loaded> {
    this.starting ??= this.spawn();
    return this.starting;
  }

  /** Queues an event; the outcome arrives when the rule has handled it (or was stopped). */
  run(key: string, event: RuleEvent): Promise<RunOutcome> {
    return new Promise((resolve) => {
      const ok = this.queue.push(key, async () => resolve(await this.invoke(event)));
      if (!ok) {
        this.dropped++;
        resolve({ status: 'dropped', error: 'too many events waiting for this rule', ms: 0, cpuMs: 0 });
      }
    });
  }

  /** Stops the worker; waiting events are dropped, running ones end as `exited`. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.clear();
    this.watchdog.remove(this);
    const w = this.worker;
    this.worker = undefined;
    if (w !== undefined) await w.terminate();
    this.failAll('exited', 'the rule was stopped');
  }

  /** Called by the watchdog: terminates the worker when its code has run past the limit. */
  check(t: number): void {
    const since = this.busy[0] as number;
    if (since === 0 || this.worker === undefined || this.killed !== undefined) return;
    if (t - since > this.limitMs) {
      const inv = this.busy[1] as number;
      this.kill('time-limit', inv, `ran longer than its ${this.limitMs} ms limit`);
    }
  }

  private kill(status: RunStatus, inv: number, error: string): void {
    this.killed = { status, inv, error };
    this.worker?.terminate().catch(() => undefined);
  }

  private spawn(): Promise<Loaded> {
    const data: WorkerData = { busy: this.busyBuffer, state: this.host.state(), stateBytes: 0 };
    data.stateBytes = Object.entries(data.state).reduce((n, [k, v]) => n + k.length + JSON.stringify(v).length, 0);
    this.busy[0] = 0;
    this.killed = undefined;
    const url = new URL(`data:text/javascript;base64,${Buffer.from(this.code).toString('base64')}`);
    const worker = new Worker(url, {
      workerData: data,
      // No environment: secrets passed to the service in variables stay out of rule code.
      env: {},
      resourceLimits: {
        maxOldGenerationSizeMb: this.limits.memoryMb,
        maxYoungGenerationSizeMb: Math.max(4, Math.min(32, Math.floor(this.limits.memoryMb / 4))),
      },
      stdout: true,
      stderr: true,
    });
    this.worker = worker;
    worker.stdout.on('data', (b: Buffer) => this.host.log('info', b.toString().trimEnd().slice(0, 2000)));
    worker.stderr.on('data', (b: Buffer) => this.host.log('warn', b.toString().trimEnd().slice(0, 2000)));
    this.watchdog.add(this);
    return new Promise<Loaded>((resolve) => {
      let settled = false;
      const settle = (l: Loaded) => {
        if (settled) return;
        settled = true;
        clearTimeout(loadTimer);
        resolve(l);
      };
      const loadTimer = setTimeout(() => {
        settle({ ok: false, message: `loading took longer than ${this.limits.loadTimeoutMs} ms` });
        this.kill('timeout', 0, 'load timeout');
      }, this.limits.loadTimeoutMs);
      loadTimer.unref();
      let lastError: Error | undefined;
      worker.on('message', (m: FromWorker) => {
        if (m.t === 'ready') settle({ ok: true, definition: m.definition });
        else if (m.t === 'bad') settle({ ok: false, message: m.message });
        else this.onMessage(m);
      });
      worker.on('error', (err) => {
        lastError = err;
        settle({ ok: false, message: `${err.name}: ${err.message}`.slice(0, 2000) });
      });
      worker.on('exit', () => {
        if (this.worker === worker) this.worker = undefined;
        this.watchdog.remove(this);
        this.starting = undefined;
        const k = this.killed;
        const oom = (lastError as NodeJS.ErrnoException | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY';
        settle({
          ok: false,
          message: oom ? 'the rule ran out of memory while loading' : 'the worker exited while loading',
        });
        if (k !== undefined) {
          this.finish(k.inv, { status: k.status, error: k.error, cpuMs: this.limitMs });
          this.failAll('error', 'the worker was restarted after another event hit a limit');
        } else if (oom) {
          this.failAll('memory', `ran out of memory (limit ${this.limits.memoryMb} MB)`);
        } else {
          this.failAll('exited', lastError ? `the worker died: ${lastError.message}` : 'the worker exited');
        }
        if (!this.stopped) this.restarts++;
      });
    });
  }

  private async invoke(event: RuleEvent): Promise<RunOutcome> {
    if (this.stopped) return { status: 'exited', error: 'the rule was stopped', ms: 0, cpuMs: 0 };
    if (this.worker === undefined) {
      const loaded = await this.load();
      if (!loaded.ok) return { status: 'error', error: loaded.message, ms: 0, cpuMs: 0 };
    }
    const worker = this.worker;
    if (worker === undefined) return { status: 'exited', error: 'the worker is gone', ms: 0, cpuMs: 0 };
    const inv = ++this.nextInv;
    const started = now();
    return new Promise<RunOutcome>((resolve) => {
      const timer = setTimeout(
        () => this.finish(inv, { status: 'timeout', error: `no end within ${this.limits.maxWaitMs} ms`, cpuMs: 0 }),
        this.limits.maxWaitMs,
      );
      timer.unref();
      this.invocations.set(inv, { resolve, started, timer });
      const msg: ToWorker = { t: 'run', inv, event };
      worker.postMessage(msg);
    });
  }

  private finish(inv: number, o: { status: RunStatus; error?: string; cpuMs: number }): void {
    const i = this.invocations.get(inv);
    if (i === undefined) return;
    this.invocations.delete(inv);
    clearTimeout(i.timer);
    const outcome: RunOutcome = { status: o.status, ms: now() - i.started, cpuMs: o.cpuMs };
    if (o.error !== undefined) outcome.error = o.error;
    i.resolve(outcome);
  }

  private failAll(status: RunStatus, error: string): void {
    for (const inv of [...this.invocations.keys()]) this.finish(inv, { status, error, cpuMs: 0 });
  }

  private onMessage(m: FromWorker): void {
    switch (m.t) {
      case 'done': {
        // A run whose code added up to more than the limit across its awaits ended too late to be stopped:
        // it still counts as over the limit.
        if (m.error !== undefined) this.finish(m.inv, { status: 'error', error: m.error, cpuMs: m.cpuMs });
        else if (m.cpuMs > this.limitMs)
          this.finish(m.inv, { status: 'time-limit', error: `used ${Math.round(m.cpuMs)} ms`, cpuMs: m.cpuMs });
        else this.finish(m.inv, { status: m.skipped ? 'skipped' : 'ok', cpuMs: m.cpuMs });
        return;
      }
      case 'call': {
        const w = this.worker;
        this.host.call(m.op, m.args).then(
          (value) => w?.postMessage({ t: 'reply', call: m.call, ok: true, value } satisfies ToWorker),
          (err: Error) =>
            w?.postMessage({
              t: 'reply',
              call: m.call,
              ok: false,
              error: String(err?.message ?? err),
            } satisfies ToWorker),
        );
        return;
      }
      case 'log':
        this.host.log(m.level, m.message, m.detail);
        return;
      case 'state':
        this.host.saveState(m.key, m.value);
        return;
      case 'ready':
      case 'bad':
        return;
      default: {
        const never: never = m;
        return never;
      }
    }
  }
}
