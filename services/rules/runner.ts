// Rules on worker threads, seen from the service. A RulePool owns a few threads (one per core by default) and
// puts each rule in the one with the fewest rules; a RuleWorker is one rule: it hands the rule events (in order
// per node, several nodes at once), answers its ctx calls through the host, and enforces the limits: memory
// through the thread's resourceLimits, time through the pool's watchdog (a segment of rule code that runs past
// the rule's limit gets the thread terminated, that invocation counted as `time-limit`), and a wall-clock bound
// on a whole invocation (one stuck on I/O is given up).
//
// Why a pool and not a thread per rule: with 100 rules on 2 cores, each event woke a thread of its own and cost
// four thread messages; a pool of threads takes one message per thread per turn of the event loop (batches,
// worker.ts). What it costs in isolation (docs/rules.md): rules in one thread share its heap limit and globals,
// and a rule that hits a limit takes the thread down with it once. Its neighbours' runs that had not started are
// run again in the new thread; those that had started end as `exited`. The rule that hit the limit then gets a
// thread of its own (as every rule had before), so it cannot do that to them again.
// A rule never runs on the service's own thread, so a looping rule costs the others one core at most.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { KeyedQueue } from './keyed-queue.ts';
import { rulesSource } from './loader.ts';
import type { RuleEvent } from './rule.ts';
import { BUSY, type CallOp, type FromThread, type ThreadData, type ToThread } from './worker.ts';

export interface RunnerLimits {
  /** Per-invocation CPU limit (ms) unless the rule asks for less or more (up to maxTimeLimitMs). */
  timeLimitMs: number;
  maxTimeLimitMs: number;
  /** The heap limit (old generation, MB) of a rules thread. */
  memoryMb: number;
  /** Longest wall time of one invocation, I/O included. */
  maxWaitMs: number;
  /** Longest time to load a rule file (its top-level code). */
  loadTimeoutMs: number;
  /** Invocations of one rule in flight at once (different nodes). */
  concurrency: number;
  /** Events waiting for one rule at most; more are dropped and counted. */
  maxQueued: number;
  /** Threads the rules share (default: one per core); 0: a thread for each rule. */
  threads?: number;
}

export type RunStatus = 'ok' | 'skipped' | 'error' | 'time-limit' | 'memory' | 'exited' | 'timeout' | 'dropped';

export interface RunOutcome {
  status: RunStatus;
  error?: string;
  /** Wall time from the start of the invocation to its end. */
  ms: number;
  /** Time the rule's code ran (measured in the thread; the limit when it was stopped). */
  cpuMs: number;
}

/** What a rule's worker asks of the service. */
export interface RuleHost {
  call(op: CallOp, args: unknown[]): Promise<unknown>;
  log(level: 'info' | 'warn' | 'error', message: string, detail?: unknown): void;
  saveState(key: string, value: unknown): void;
  /** The rule's state now (a restarted thread starts from it). */
  state(): Record<string, unknown>;
}

type Loaded = { ok: true; definition: unknown } | { ok: false; message: string };

const now = () => performance.timeOrigin + performance.now();

/** A segment blocked without using CPU (a synchronous wait) is stopped after its limit plus this much wall time. */
export const BLOCKED_GRACE_MS = 1000;

/** CPU time (ms) a thread of this process has used, from Linux's schedstat (ns); undefined where unavailable. */
function threadCpuMs(tid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/self/task/${tid}/schedstat`, 'latin1');
    const ns = Number(text.slice(0, text.indexOf(' ')));
    return Number.isFinite(ns) ? ns / 1e6 : undefined;
  } catch {
    return undefined;
  }
}

/** The thread's entry, bundled once per pool like a rule file (the service may run from .ts sources). */
async function compileThread(): Promise<string> {
  const esbuild = await import('esbuild');
  const entry =
    `import ${JSON.stringify(rulesSource('worker-guard'))};\n` +
    `import { startThread } from ${JSON.stringify(rulesSource('worker'))};\n` +
    'startThread();\n';
  const out = await esbuild.build({
    stdin: { contents: entry, resolveDir: process.cwd(), sourcefile: 'rules-thread.js' },
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'silent',
  });
  const code = out.outputFiles[0]?.text;
  if (code === undefined) throw new Error('esbuild produced no output');
  return code;
}

/** The threads rules run in, and the watchdog that checks every running segment (one timer for all). */
export class RulePool {
  /** Threads shared by rules (0: every rule has its own). */
  readonly threads: number;
  private readonly shared: RuleThread[] = [];
  private readonly live = new Set<RuleThread>();
  private timer?: NodeJS.Timeout;
  /** Rules with invocations in flight, checked against their wall-clock bound (one timer, not one per run). */
  private readonly waiting = new Set<RuleWorker>();
  private sweeper?: NodeJS.Timeout;
  private code?: Promise<string>;
  private lastRule = 0;
  private lastInv = 0;

  constructor(options: { threads?: number; tickMs?: number } = {}) {
    this.threads = Math.max(0, Math.floor(options.threads ?? availableParallelism()));
    this.tickMs = options.tickMs ?? 5;
  }

  private readonly tickMs: number;

  ruleId(): number {
    return ++this.lastRule;
  }

  invId(): number {
    return ++this.lastInv;
  }

  /** How many threads are running now (for tests and the bench). */
  get running(): number {
    return this.live.size;
  }

  /** The thread a rule loads into: its own when isolated, else the shared one (same heap limit) with fewest rules. */
  assign(rw: RuleWorker, memoryMb: number): RuleThread {
    if (rw.isolated || this.threads === 0) return new RuleThread(this, memoryMb, true);
    const same = this.shared.filter((t) => t.memoryMb === memoryMb);
    if (same.length < this.threads) {
      const t = new RuleThread(this, memoryMb, false);
      this.shared.push(t);
      return t;
    }
    return same.reduce((a, b) => (b.size < a.size ? b : a));
  }

  /** A thread with no rules left is ended and forgotten. */
  forget(t: RuleThread): void {
    const i = this.shared.indexOf(t);
    if (i >= 0) this.shared.splice(i, 1);
  }

  threadCode(): Promise<string> {
    this.code ??= compileThread();
    this.code.catch(() => {
      this.code = undefined;
    });
    return this.code;
  }

  watch(t: RuleThread): void {
    this.live.add(t);
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.tickMs);
      this.timer.unref();
    }
  }

  unwatch(t: RuleThread): void {
    this.live.delete(t);
    if (this.live.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    const t = now();
    for (const thread of this.live) thread.check(t, this.tickMs);
  }

  /** `rw` has an invocation in flight: from now on it is checked against its wall-clock bound. */
  expecting(rw: RuleWorker): void {
    this.waiting.add(rw);
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
      this.sweeper.unref();
    }
  }

  private sweep(): void {
    const t = now();
    for (const rw of this.waiting) if (!rw.expire(t)) this.waiting.delete(rw);
    if (this.waiting.size === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

/** How often invocations are checked against --max-wait-ms: a run is given up at most this late. */
const SWEEP_MS = 100;

interface PendingLoad {
  rw: RuleWorker;
  msg: ToThread;
  timeoutMs: number;
  settle: (l: Loaded) => void;
}

/** Why a thread ended, as each of its rules is told. */
interface ThreadExit {
  killed?: { status: RunStatus; inv: number; error: string; culprit?: RuleWorker };
  oom: boolean;
  error?: string;
  /** The `seq` of the last run the thread had started. */
  started: number;
  /** The rule the thread ended for, when one is to blame. */
  culprit?: RuleWorker;
  memoryMb: number;
}

/** One worker thread and the rules loaded in it. */
export class RuleThread {
  private worker?: Worker;
  private spawning?: Promise<Worker>;
  private readonly busyBuffer = new SharedArrayBuffer(BUSY.size * 8);
  private readonly busy = new Float64Array(this.busyBuffer);
  private readonly rules = new Map<number, RuleWorker>();
  private out: ToThread[] = [];
  private flushQueued = false;
  private seq = 0;
  /** Bumped when the thread ends: answers to a dead thread's calls are not sent to its successor. */
  generation = 0;
  private killed?: ThreadExit['killed'];
  /** The open segment as the watchdog first saw it: its CPU time then, and what it may have used before. */
  private seen?: { since: number; cpu: number; before: number };
  /** Loads posted and not yet answered, by rule id. */
  private readonly loads = new Map<number, PendingLoad>();

  constructor(
    private readonly pool: RulePool,
    readonly memoryMb: number,
    readonly dedicated: boolean,
  ) {}

  get size(): number {
    return this.rules.size;
  }

  /**
   * Loads a rule. Loads are posted at once (a thread restarted with 50 rules reloads them in one batch) and the
   * thread runs them one after the other; each load's time is bounded by the watchdog from when the thread
   * starts it (BUSY.loading), not from when it was posted.
   */
  async load(rw: RuleWorker, code: string, state: Record<string, unknown>, timeoutMs: number): Promise<Loaded> {
    this.rules.set(rw.id, rw);
    const stateBytes = Object.entries(state).reduce((n, [k, v]) => n + k.length + JSON.stringify(v).length, 0);
    try {
      await this.start();
    } catch (err) {
      this.rules.delete(rw.id);
      return { ok: false, message: `the rules thread did not start: ${(err as Error).message}`.slice(0, 2000) };
    }
    if (this.rules.get(rw.id) !== rw) return { ok: false, message: 'the rule was stopped while loading' };
    return new Promise<Loaded>((resolve) => {
      const msg: ToThread = { t: 'load', rule: rw.id, code, state, stateBytes };
      this.loads.set(rw.id, {
        rw,
        msg,
        timeoutMs,
        settle: (l) => {
          this.loads.delete(rw.id);
          resolve(l);
        },
      });
      this.post(msg);
    });
  }

  /** Queues a run; returns its `seq` (runs posted after the thread's last started one had not begun). */
  run(rule: number, inv: number, event: RuleEvent): number {
    const seq = ++this.seq;
    this.post({ t: 'run', rule, inv, seq, event });
    return seq;
  }

  reply(generation: number, m: ToThread): void {
    if (generation === this.generation) this.post(m);
  }

  /** Takes a rule out; a thread left without rules ends. */
  async detach(rw: RuleWorker): Promise<void> {
    if (this.rules.get(rw.id) !== rw) return;
    this.rules.delete(rw.id);
    this.loads.get(rw.id)?.settle({ ok: false, message: 'the rule was stopped while loading' });
    if (this.rules.size > 0) {
      this.post({ t: 'unload', rule: rw.id });
      return;
    }
    this.pool.forget(this);
    const w = this.worker ?? (await this.spawning?.catch(() => undefined));
    if (w !== undefined && this.rules.size === 0) await w.terminate();
  }

  /**
   * Called by the watchdog (every tickMs): terminates the thread when a segment of rule code has used more CPU
   * than its rule's limit. CPU, not wall time: on a loaded machine a thread can wait for a core longer than the
   * limit, and stopping a shared thread for that would cost every rule in it. A segment blocked without using
   * CPU is stopped after its limit plus BLOCKED_GRACE_MS. Where the thread's CPU time cannot be read (not
   * Linux), wall time is the measure.
   */
  check(t: number, tickMs: number): void {
    if (this.worker === undefined || this.killed !== undefined) return;
    const loading = this.busy[BUSY.loading] as number;
    if (loading !== 0) {
      const l = this.loads.get(loading);
      if (l !== undefined && t - (this.busy[BUSY.loadSince] as number) > l.timeoutMs) {
        l.settle({ ok: false, message: `loading took longer than ${l.timeoutMs} ms` });
        this.kill('timeout', 0, 'load timeout', l.rw);
        return;
      }
    }
    const since = this.busy[BUSY.since] as number;
    if (since === 0) return;
    const wall = t - since;
    // Segments shorter than a tick are the common case: they cost no system call.
    if (wall <= tickMs) return;
    const rw = this.rules.get(this.busy[BUSY.rule] as number);
    const limit = rw?.limitMs ?? 1000;
    const inv = this.busy[BUSY.inv] as number;
    const tid = this.busy[BUSY.tid] as number;
    const cpu = tid > 0 ? threadCpuMs(tid) : undefined;
    if (cpu === undefined) {
      if (wall > limit) this.kill('time-limit', inv, `ran longer than its ${limit} ms limit`, rw);
      return;
    }
    // Before the first look, the segment is taken to have run all the time, up to two ticks.
    if (this.seen?.since !== since) this.seen = { since, cpu, before: Math.min(wall, 2 * tickMs) };
    const used = this.seen.before + (cpu - this.seen.cpu);
    if (used > limit) this.kill('time-limit', inv, `ran longer than its ${limit} ms limit`, rw);
    else if (wall > limit + BLOCKED_GRACE_MS)
      this.kill('time-limit', inv, `blocked for more than ${Math.round(wall)} ms (limit ${limit} ms of CPU)`, rw);
  }

  private kill(status: RunStatus, inv: number, error: string, culprit?: RuleWorker): void {
    if (this.killed !== undefined) return;
    this.killed = { status, inv, error, culprit };
    this.worker?.terminate().catch(() => undefined);
  }

  private post(m: ToThread): void {
    this.out.push(m);
    if (!this.flushQueued) {
      this.flushQueued = true;
      // Everything posted during this turn of the event loop leaves as one message.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    const w = this.worker;
    if (w === undefined || this.out.length === 0) return;
    const batch = this.out;
    this.out = [];
    w.postMessage(batch);
  }

  private start(): Promise<Worker> {
    if (this.worker !== undefined) return Promise.resolve(this.worker);
    this.spawning ??= this.spawn().finally(() => {
      this.spawning = undefined;
    });
    return this.spawning;
  }

  private async spawn(): Promise<Worker> {
    const code = await this.pool.threadCode();
    this.busy.fill(0);
    this.killed = undefined;
    this.seen = undefined;
    const worker = new Worker(new URL(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`), {
      workerData: { busy: this.busyBuffer } satisfies ThreadData,
      // No environment: secrets passed to the service in variables stay out of rule code.
      env: {},
      resourceLimits: {
        maxOldGenerationSizeMb: this.memoryMb,
        maxYoungGenerationSizeMb: Math.max(4, Math.min(32, Math.floor(this.memoryMb / 4))),
      },
      stdout: true,
      stderr: true,
    });
    this.worker = worker;
    // console.* is routed per rule inside the thread; this is what is written to the streams directly.
    worker.stdout.on('data', (b: Buffer) => this.console('info', b));
    worker.stderr.on('data', (b: Buffer) => this.console('warn', b));
    this.pool.watch(this);
    let lastError: Error | undefined;
    worker.on('message', (batch: FromThread[]) => {
      for (const m of batch) this.route(m);
    });
    worker.on('error', (err) => {
      lastError = err;
    });
    worker.on('exit', () => this.exited(worker, lastError));
    if (this.out.length > 0) this.flush();
    return worker;
  }

  private console(level: 'info' | 'warn', b: Buffer): void {
    const rw = this.rules.get(this.busy[BUSY.rule] as number) ?? this.rules.values().next().value;
    rw?.log(level, b.toString().trimEnd().slice(0, 2000));
  }

  private route(m: FromThread): void {
    if (m.t === 'ready' || m.t === 'bad') {
      this.loads
        .get(m.rule)
        ?.settle(m.t === 'ready' ? { ok: true, definition: m.definition } : { ok: false, message: m.message });
      return;
    }
    const rw = this.rules.get(m.rule) ?? (m.t === 'log' ? this.rules.values().next().value : undefined);
    rw?.message(m, this);
  }

  private exited(worker: Worker, lastError: Error | undefined): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    this.generation++;
    this.out = [];
    this.pool.unwatch(this);
    const killed = this.killed;
    this.killed = undefined;
    const oom = (lastError as NodeJS.ErrnoException | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY';
    const loading = this.loads.get(this.busy[BUSY.loading] as number);
    loading?.settle({
      ok: false,
      message: oom ? 'the rule ran out of memory while loading' : 'the worker exited while loading',
    });
    // The rule to blame: the one the watchdog stopped, or the one whose code ran (or loaded) when memory ran out.
    let culprit = killed?.culprit;
    if (culprit === undefined && oom) culprit = loading?.rw ?? this.rules.get(this.busy[BUSY.rule] as number);
    // Loads that were waiting behind the one at fault are posted again to the new thread; with nobody to blame
    // (a crash), they fail like the rest.
    const reload = culprit === undefined ? [] : [...this.loads.values()].filter((l) => l.rw !== culprit);
    for (const l of this.loads.values()) {
      if (!reload.includes(l)) l.settle({ ok: false, message: 'the worker exited while loading' });
    }
    const exit: ThreadExit = { oom, started: this.busy[BUSY.seq] as number, memoryMb: this.memoryMb };
    if (killed !== undefined) exit.killed = killed;
    if (culprit !== undefined) exit.culprit = culprit;
    if (lastError !== undefined) exit.error = lastError.message;
    const rules = [...this.rules.values()].filter((rw) => !reload.some((l) => l.rw === rw));
    for (const rw of rules) this.rules.delete(rw.id);
    this.seq = 0;
    if (reload.length > 0) {
      this.start().then(
        () => {
          for (const l of reload) if (this.loads.get(l.rw.id) === l) this.post(l.msg);
        },
        (err: Error) => {
          for (const l of reload) l.settle({ ok: false, message: `the rules thread did not start: ${err.message}` });
        },
      );
    } else if (this.dedicated) this.pool.forget(this);
    for (const rw of rules) rw.threadExited(this, exit);
  }
}

interface Invocation {
  resolve: (o: RunOutcome) => void;
  started: number;
  event: RuleEvent;
  /** Its `seq` in the thread it was posted to. */
  seq: number;
}

export class RuleWorker {
  readonly id: number;
  private thread?: RuleThread;
  private ready = false;
  private readonly invocations = new Map<number, Invocation>();
  private readonly queue: KeyedQueue;
  private starting?: Promise<Loaded>;
  private stopped = false;
  /** The limit this rule runs under (its own timeLimitMs, capped). */
  limitMs: number;
  /** Set once the rule has brought its thread down: it runs in a thread of its own from then on. */
  isolated = false;
  /** Events dropped because the queue was full. */
  dropped = 0;
  /** Threads started for this rule after a crash or a limit. */
  restarts = 0;

  constructor(
    readonly name: string,
    private readonly code: string,
    private readonly limits: RunnerLimits,
    private readonly host: RuleHost,
    private readonly pool: RulePool,
  ) {
    this.id = pool.ruleId();
    this.limitMs = limits.timeLimitMs;
    this.queue = new KeyedQueue(limits.concurrency, limits.maxQueued);
  }

  /** Loads the rule in a thread and waits for its definition (or why it cannot load). */
  load(): Promise<Loaded> {
    this.starting ??= this.attach();
    return this.starting;
  }

  private async attach(): Promise<Loaded> {
    const thread = this.pool.assign(this, this.limits.memoryMb);
    this.thread = thread;
    const loaded = await thread.load(this, this.code, this.host.state(), this.limits.loadTimeoutMs);
    if (this.thread !== thread) return loaded.ok ? { ok: false, message: 'the worker exited while loading' } : loaded;
    if (loaded.ok) {
      this.ready = true;
    } else {
      this.thread = undefined;
      this.starting = undefined;
      await thread.detach(this);
    }
    return loaded;
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

  /** Stops the rule; waiting events are dropped, running ones end as `exited`. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.clear();
    const t = this.thread;
    this.thread = undefined;
    this.ready = false;
    if (t !== undefined) await t.detach(this);
    this.failAll('exited', 'the rule was stopped');
  }

  log(level: 'info' | 'warn', message: string): void {
    this.host.log(level, message);
  }

  private async invoke(event: RuleEvent): Promise<RunOutcome> {
    if (this.stopped) return { status: 'exited', error: 'the rule was stopped', ms: 0, cpuMs: 0 };
    if (!this.ready) {
      const loaded = await this.load();
      if (!loaded.ok) return { status: 'error', error: loaded.message, ms: 0, cpuMs: 0 };
    }
    const thread = this.thread;
    if (!this.ready || thread === undefined) return { status: 'exited', error: 'the worker is gone', ms: 0, cpuMs: 0 };
    const inv = this.pool.invId();
    if (this.invocations.size === 0) this.pool.expecting(this);
    return new Promise<RunOutcome>((resolve) => {
      this.invocations.set(inv, { resolve, started: now(), event, seq: thread.run(this.id, inv, event) });
    });
  }

  /** Gives up the invocations older than --max-wait-ms; false when none is left in flight. */
  expire(t: number): boolean {
    // The map keeps start order (a run sent again keeps its place): the oldest come first.
    for (const [inv, i] of this.invocations) {
      if (t - i.started < this.limits.maxWaitMs) break;
      this.finish(inv, { status: 'timeout', error: `no end within ${this.limits.maxWaitMs} ms`, cpuMs: 0 });
    }
    return this.invocations.size > 0;
  }

  private finish(inv: number, o: { status: RunStatus; error?: string; cpuMs: number }): void {
    const i = this.invocations.get(inv);
    if (i === undefined) return;
    this.invocations.delete(inv);
    const outcome: RunOutcome = { status: o.status, ms: now() - i.started, cpuMs: o.cpuMs };
    if (o.error !== undefined) outcome.error = o.error;
    i.resolve(outcome);
  }

  private failAll(status: RunStatus, error: string): void {
    for (const inv of [...this.invocations.keys()]) this.finish(inv, { status, error, cpuMs: 0 });
  }

  /** The thread this rule was in has ended; `exit` says why and whose fault it was. */
  threadExited(thread: RuleThread, exit: ThreadExit): void {
    if (this.thread !== thread) return;
    this.thread = undefined;
    this.ready = false;
    this.starting = undefined;
    if (!this.stopped) this.restarts++;
    const mine = exit.culprit === this || (thread.dedicated && exit.culprit === undefined);
    if (exit.culprit === this) this.isolated = true;
    const k = exit.killed;
    if (mine && k !== undefined) {
      this.finish(k.inv, { status: k.status, error: k.error, cpuMs: this.limitMs });
      this.failAll('error', 'the worker was restarted after another event hit a limit');
    } else if (mine && exit.oom) {
      this.failAll('memory', `ran out of memory (limit ${exit.memoryMb} MB)`);
    } else if (exit.culprit !== undefined) {
      this.rerun(exit);
    } else {
      this.failAll('exited', exit.error !== undefined ? `the worker died: ${exit.error}` : 'the worker exited');
    }
  }

  /** Another rule brought the shared thread down: runs not yet started go to a new thread, started ones are lost. */
  private rerun(exit: ThreadExit): void {
    const why = `${exit.culprit?.name ?? 'another rule'} ${exit.oom ? 'ran out of memory' : 'hit its limit'}`;
    const again = new Set<number>();
    for (const [inv, i] of this.invocations) {
      if (i.seq > exit.started) again.add(inv);
      else this.finish(inv, { status: 'exited', error: `its thread was restarted (${why} in it)`, cpuMs: 0 });
    }
    if (again.size === 0 || this.stopped) return;
    const send = (loaded: Loaded) => {
      for (const inv of again) {
        const i = this.invocations.get(inv);
        if (i === undefined) continue;
        const thread = this.thread;
        if (!loaded.ok || thread === undefined) {
          this.finish(inv, { status: 'error', error: loaded.ok ? 'the worker is gone' : loaded.message, cpuMs: 0 });
        } else {
          i.seq = thread.run(this.id, inv, i.event);
        }
      }
    };
    this.load().then(send, (err: Error) => send({ ok: false, message: String(err?.message ?? err) }));
  }

  /** A message of this rule from its thread. */
  message(m: FromThread, thread: RuleThread): void {
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
        const generation = thread.generation;
        this.host.call(m.op, m.args).then(
          (value) => thread.reply(generation, { t: 'reply', call: m.call, ok: true, value }),
          (err: Error) =>
            thread.reply(generation, { t: 'reply', call: m.call, ok: false, error: String(err?.message ?? err) }),
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
