// The inside of a rules thread. A thread hosts one rule or several (runner.ts decides): its entry is built from
// this file's startThread() (runner.ts bundles it once); each rule file is bundled by the loader with this file
// and calls startRule(mod) when the thread imports it, which hands the module to the thread's startThread()
// through a global (each bundle has its own copy of this file; only the entry's copy runs the thread).
//
// Messages both ways are batched: the service posts one array per thread per turn of its event loop, and the
// thread answers likewise (one postMessage per batch, not per event: thread messaging was the cost).
//
// Timing: every item of a batch (a run to start, a ctx call's answer to deliver) runs in its own setImmediate
// callback, and Node runs the microtasks an item queues before the next callback: that item's segment of rule
// code (up to the rule's next real await) is timed alone and charged to its invocation. While it runs, the
// shared `busy` array holds when it started, the invocation and the rule; the service's watchdog reads it and
// terminates a thread whose code has run past the rule's limit (a loop never returns to read a message).
//
// This is not a security boundary (docs/rules.md): a worker thread shares the process, its file system and
// its network, and rules sharing a thread share its globals and its heap limit.
import { readlinkSync } from 'node:fs';
import { format } from 'node:util';
import { parentPort, workerData } from 'node:worker_threads';
import type { RuleContext, RuleDefinition, RuleEvent, RuleJson, RuleNode } from './rule.ts';

/** What the service sends a thread (in arrays). */
export type ToThread =
  | { t: 'load'; rule: number; code: string; state: Record<string, unknown>; stateBytes: number }
  | { t: 'unload'; rule: number }
  | { t: 'run'; rule: number; inv: number; seq: number; event: RuleEvent }
  | { t: 'reply'; call: number; ok: true; value: unknown }
  | { t: 'reply'; call: number; ok: false; error: string };

/** What a thread sends the service (in arrays). `rule` 0: no rule was running (console output outside a run). */
export type FromThread =
  | { t: 'ready'; rule: number; definition: unknown }
  | { t: 'bad'; rule: number; message: string }
  | { t: 'done'; rule: number; inv: number; skipped?: boolean; error?: string; cpuMs: number }
  | { t: 'call'; rule: number; call: number; op: CallOp; args: unknown[] }
  | { t: 'log'; rule: number; level: 'info' | 'warn' | 'error'; message: string; detail?: unknown }
  | { t: 'state'; rule: number; key: string; value?: unknown };

export type CallOp = 'node' | 'nodes' | 'write' | 'exec' | 'emit' | 'http' | 'history';

export interface ThreadData {
  /** Float64Array over a SharedArrayBuffer, indexed by BUSY. */
  busy: SharedArrayBuffer;
}

/** Slots of the shared `busy` array. */
export const BUSY = {
  /** When the running segment started (epoch ms); 0 when no rule code runs. */
  since: 0,
  /** The invocation the segment belongs to. */
  inv: 1,
  /** The `seq` of the last run started: runs posted after it had not begun when a thread died. */
  seq: 2,
  /** The rule the segment belongs to. */
  rule: 3,
  /** The thread's id in the OS (Linux), so the watchdog can read its CPU time; 0 when unknown. */
  tid: 4,
  /** The rule whose file is loading (0: none), and since when (epoch ms): the watchdog bounds a load's time. */
  loading: 5,
  loadSince: 6,
  size: 7,
} as const;

/** Most bytes (as JSON) of one rule's whole state. */
export const MAX_STATE_BYTES = 64 * 1024;

const REGISTER = Symbol.for('mycelium.rules.register');

const now = () => performance.timeOrigin + performance.now();

function errorText(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`.slice(0, 2000);
  return String(err).slice(0, 2000);
}

/** What a rule file's module may look like: the definition as default export (or as `rule`). */
export interface RuleModule {
  default?: unknown;
  rule?: unknown;
}

/** Called by a rule's bundle once its module has run: hands it to the thread that imported it. */
export function startRule(mod: RuleModule): void {
  const register = (globalThis as Record<symbol, unknown>)[REGISTER];
  if (typeof register !== 'function') throw new Error('a rule runs in a rules thread (runner.ts)');
  (register as (m: RuleModule) => void)(mod);
}

type RunMsg = Extract<ToThread, { t: 'run' }>;
type ReplyMsg = Extract<ToThread, { t: 'reply' }>;
type LoadMsg = Extract<ToThread, { t: 'load' }>;

/** The thread's main: loads rules, runs their events, times their code. */
export function startThread(): void {
  const port = parentPort;
  if (port === null) throw new Error('a rules thread runs in a worker thread');
  const busy = new Float64Array((workerData as ThreadData).busy);
  try {
    // "<pid>/task/<tid>"
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) busy[BUSY.tid] = tid;
  } catch {
    // Not Linux: the watchdog goes by wall time.
  }
  const rules = new Map<number, (inv: number, event: RuleEvent) => Promise<void>>();
  const pending = new Map<
    number,
    { rule: number; inv: number; resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  const cpu = new Map<number, number>();
  let nextCall = 0;
  let current = 0;

  let out: FromThread[] = [];
  let flushQueued = false;
  const flush = () => {
    flushQueued = false;
    const batch = out;
    out = [];
    if (batch.length > 0) port.postMessage(batch);
  };
  const post = (m: FromThread) => {
    out.push(m);
    if (!flushQueued) {
      flushQueued = true;
      // Queued behind the items of the batch being handled: their answers leave together.
      setImmediate(flush);
    }
  };

  const close = () => {
    const since = busy[BUSY.since] as number;
    if (since === 0) return;
    busy[BUSY.since] = 0;
    const inv = busy[BUSY.inv] as number;
    const spent = cpu.get(inv);
    if (spent !== undefined) cpu.set(inv, spent + (now() - since));
  };
  const open = (rule: number, inv: number) => {
    close();
    busy[BUSY.inv] = inv;
    busy[BUSY.rule] = rule;
    current = rule;
    busy[BUSY.since] = now();
  };

  // Console output and errors outside a run's promise go to the service as the rule's log, and do not end the
  // thread (other rules live in it).
  const say =
    (level: 'info' | 'warn' | 'error') =>
    (...args: unknown[]) =>
      post({ t: 'log', rule: current, level, message: format(...args).slice(0, 2000) });
  console.log = say('info');
  console.info = say('info');
  console.debug = say('info');
  console.warn = say('warn');
  console.error = say('error');
  process.on('uncaughtException', (err) => say('error')(`uncaught: ${errorText(err)}`));
  process.on('unhandledRejection', (err) => say('error')(`unhandled rejection: ${errorText(err)}`));

  let loading: LoadMsg | undefined;
  let loads: Promise<void> = Promise.resolve();
  let loadCount = 0;
  const register = (mod: RuleModule) => {
    const m = loading;
    loading = undefined;
    if (m === undefined) return;
    const def = (mod.default ?? mod.rule) as RuleDefinition | undefined;
    if (typeof def !== 'object' || def === null || typeof def.run !== 'function') {
      post({ t: 'bad', rule: m.rule, message: 'the file must export default a rule: { name, on, run(event, ctx) }' });
      return;
    }
    rules.set(m.rule, ruleRunner(m, def));
    post({ t: 'ready', rule: m.rule, definition: describe(def) });
  };
  // Fixed, so a rule cannot put itself between the thread and the next rule loaded into it.
  Object.defineProperty(globalThis, REGISTER, { value: register, writable: false, configurable: false });
  const load = (m: LoadMsg) => {
    loads = loads.then(async () => {
      close();
      loading = m;
      current = m.rule;
      busy[BUSY.loadSince] = now();
      busy[BUSY.loading] = m.rule;
      // A comment makes each load's URL new: the same code loaded again runs again instead of coming from the
      // module cache.
      const code = `${m.code}\n// load ${++loadCount}\n`;
      try {
        await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`);
        if (loading === m) post({ t: 'bad', rule: m.rule, message: 'the file did not start its rule' });
      } catch (err) {
        post({ t: 'bad', rule: m.rule, message: errorText(err) });
      } finally {
        busy[BUSY.loading] = 0;
        if (loading === m) loading = undefined;
      }
    });
  };

  function ruleRunner(m: LoadMsg, def: RuleDefinition) {
    const rule = m.rule;
    const state = new Map<string, unknown>(Object.entries(m.state));
    let stateBytes = m.stateBytes;

    const makeCtx = (inv: number): RuleContext => {
      const call = <T>(op: CallOp, args: unknown[]): Promise<T> =>
        new Promise<T>((resolve, reject) => {
          const id = ++nextCall;
          pending.set(id, { rule, inv, resolve: resolve as (v: unknown) => void, reject });
          post({ t: 'call', rule, call: id, op, args });
        });
      const log = (level: 'info' | 'warn' | 'error') => (message: string, detail?: RuleJson) =>
        post({ t: 'log', rule, level, message: String(message).slice(0, 2000), detail });
      return {
        rule: def.name,
        node: (uid) => call<RuleNode | undefined>('node', [uid]),
        nodes: (glob) => call('nodes', [glob ?? '*']),
        write: (uid, resource, payload) => call('write', [uid, resource, payload]),
        exec: (uid, command, params, options) => call('exec', [uid, command, params ?? {}, options ?? {}]),
        emit: (uid, resource, value) => call('emit', [uid, resource, value]),
        http: (url, request) => call('http', [String(url), request ?? {}]),
        history: (uid, resource, query) => call('history', [uid, resource, query ?? {}]),
        state: {
          get: <T extends RuleJson>(key: string) => state.get(key) as T | undefined,
          set(key, value) {
            const text = JSON.stringify(value);
            if (text === undefined) throw new Error('state values must be JSON');
            const old = state.has(key) ? JSON.stringify(state.get(key)).length + key.length : 0;
            const bytes = stateBytes - old + text.length + key.length;
            if (bytes > MAX_STATE_BYTES) throw new Error(`a rule's state may hold at most ${MAX_STATE_BYTES} bytes`);
            stateBytes = bytes;
            const copy = JSON.parse(text) as unknown;
            state.set(key, copy);
            post({ t: 'state', rule, key, value: copy });
          },
          delete(key) {
            if (!state.has(key)) return;
            stateBytes -= JSON.stringify(state.get(key)).length + key.length;
            state.delete(key);
            post({ t: 'state', rule, key });
          },
          keys: () => [...state.keys()],
        },
        log: { info: log('info'), warn: log('warn'), error: log('error') },
      };
    };

    return async (inv: number, event: RuleEvent) => {
      let skipped = false;
      let error: string | undefined;
      try {
        const when = def.on?.update?.when;
        if (event.type === 'update' && typeof when === 'function' && !when(event)) skipped = true;
        else await def.run(event, makeCtx(inv));
      } catch (err) {
        error = errorText(err);
      }
      // The segment that ends here is still being timed: count it before reporting.
      const since = busy[BUSY.since] as number;
      const spent = (cpu.get(inv) ?? 0) + (since > 0 && busy[BUSY.inv] === inv ? now() - since : 0);
      cpu.delete(inv);
      post(
        error === undefined
          ? { t: 'done', rule, inv, skipped, cpuMs: spent }
          : { t: 'done', rule, inv, error, cpuMs: spent },
      );
    };
  }

  const startRun = (m: RunMsg) => {
    const run = rules.get(m.rule);
    if (run === undefined) {
      post({ t: 'done', rule: m.rule, inv: m.inv, error: 'the rule is not loaded in this thread', cpuMs: 0 });
      return;
    }
    open(m.rule, m.inv);
    busy[BUSY.seq] = m.seq;
    cpu.set(m.inv, 0);
    run(m.inv, m.event).catch(() => undefined);
  };
  const deliver = (m: ReplyMsg) => {
    const p = pending.get(m.call);
    if (p === undefined) return;
    pending.delete(m.call);
    open(p.rule, p.inv);
    if (m.ok) p.resolve(m.value);
    else p.reject(new Error(m.error));
  };

  port.on('message', (batch: ToThread[]) => {
    for (const m of batch) {
      if (m.t === 'run') setImmediate(startRun, m);
      else if (m.t === 'reply') setImmediate(deliver, m);
      else if (m.t === 'load') load(m);
      else rules.delete(m.rule);
    }
    // After the batch's last item and its microtasks: no rule code runs.
    setImmediate(close);
  });
}

/** The definition without its functions, for the service (it cannot receive functions). */
function describe(def: RuleDefinition): unknown {
  const on = (def.on ?? {}) as Record<string, unknown>;
  const triggers: Record<string, unknown> = {};
  for (const [kind, spec] of Object.entries(on)) {
    if (typeof spec !== 'object' || spec === null) {
      triggers[kind] = spec;
      continue;
    }
    const copy: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(spec)) copy[k] = typeof v === 'function' ? true : v;
    triggers[kind] = copy;
  }
  return {
    name: def.name,
    description: def.description,
    timeLimitMs: def.timeLimitMs,
    on: triggers,
  };
}
