// The inside of a rule's worker thread. The loader bundles this file with one rule file (loader.ts), so the
// worker runs one rule: it reports the rule's definition, then runs it for every event the service sends and
// turns the rule's ctx calls into messages to the service (runner.ts), which does the I/O.
//
// Timing: while rule code runs, `busy[0]` holds when that run started and `busy[1]` the invocation it belongs
// to; the service's watchdog reads them from shared memory and terminates a worker whose code has run past the
// rule's limit (a loop never returns to read a message, so the worker cannot stop itself). The run ends when
// the microtasks it queued have run (setImmediate), i.e. at the rule's next real await.
//
// This is not a security boundary (docs/rules.md): a worker thread shares the process, its file system and
// its network. It bounds time and memory and keeps one rule's crash from the others.
import { parentPort, workerData } from 'node:worker_threads';
import type { RuleContext, RuleDefinition, RuleEvent, RuleJson, RuleNode } from './rule.ts';

/** What the service sends a worker. */
export type ToWorker =
  | { t: 'run'; inv: number; event: RuleEvent }
  | { t: 'reply'; call: number; ok: true; value: unknown }
  | { t: 'reply'; call: number; ok: false; error: string };

/** What a worker sends the service. */
export type FromWorker =
  | { t: 'ready'; definition: unknown }
  | { t: 'bad'; message: string }
  | { t: 'done'; inv: number; skipped?: boolean; error?: string; cpuMs: number }
  | { t: 'call'; call: number; inv: number; op: CallOp; args: unknown[] }
  | { t: 'log'; inv: number; level: 'info' | 'warn' | 'error'; message: string; detail?: unknown }
  | { t: 'state'; key: string; value?: unknown };

export type CallOp = 'node' | 'nodes' | 'write' | 'exec' | 'emit' | 'http' | 'history';

export interface WorkerData {
  /** Float64Array over a SharedArrayBuffer: [busy since (epoch ms, 0 idle), invocation]. */
  busy: SharedArrayBuffer;
  state: Record<string, unknown>;
  stateBytes: number;
}

/** Most bytes (as JSON) of one rule's whole state. */
export const MAX_STATE_BYTES = 64 * 1024;

const now = () => performance.timeOrigin + performance.now();

function errorText(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`.slice(0, 2000);
  return String(err).slice(0, 2000);
}

/** What a rule file's module may look like: the definition as default export (or as `rule`). */
interface RuleModule {
  default?: unknown;
  rule?: unknown;
}

/** Runs the rule module `mod` in this worker. Called by the bundle the loader builds. */
export function startRule(mod: RuleModule): void {
  const port = parentPort;
  if (port === null) throw new Error('a rule runs in a worker thread');
  const data = workerData as WorkerData;
  const busy = new Float64Array(data.busy);
  const post = (m: FromWorker) => port.postMessage(m);

  const def = (mod.default ?? mod.rule) as RuleDefinition | undefined;
  if (typeof def !== 'object' || def === null || typeof def.run !== 'function') {
    post({ t: 'bad', message: 'the file must export default a rule: { name, on, run(event, ctx) }' });
    return;
  }

  const state = new Map<string, unknown>(Object.entries(data.state));
  let stateBytes = data.stateBytes;
  const pending = new Map<number, { inv: number; resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const cpu = new Map<number, number>();
  let nextCall = 0;
  let idleQueued = false;

  const beginRun = (inv: number) => {
    busy[1] = inv;
    busy[0] = now();
    if (!idleQueued) {
      idleQueued = true;
      setImmediate(endRun);
    }
  };
  function endRun() {
    idleQueued = false;
    const started = busy[0] as number;
    const inv = busy[1] as number;
    busy[0] = 0;
    if (started > 0 && cpu.has(inv)) cpu.set(inv, (cpu.get(inv) as number) + (now() - started));
  }

  const makeCtx = (inv: number): RuleContext => {
    const call = <T>(op: CallOp, args: unknown[]): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        const id = ++nextCall;
        pending.set(id, { inv, resolve: resolve as (v: unknown) => void, reject });
        post({ t: 'call', call: id, inv, op, args });
      });
    const log = (level: 'info' | 'warn' | 'error') => (message: string, detail?: RuleJson) =>
      post({ t: 'log', inv, level, message: String(message).slice(0, 2000), detail });
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
          post({ t: 'state', key, value: copy });
        },
        delete(key) {
          if (!state.has(key)) return;
          stateBytes -= JSON.stringify(state.get(key)).length + key.length;
          state.delete(key);
          post({ t: 'state', key });
        },
        keys: () => [...state.keys()],
      },
      log: { info: log('info'), warn: log('warn'), error: log('error') },
    };
  };

  const run = async (inv: number, event: RuleEvent) => {
    cpu.set(inv, 0);
    let skipped = false;
    let error: string | undefined;
    try {
      const when = def.on?.update?.when;
      if (event.type === 'update' && typeof when === 'function' && !when(event)) skipped = true;
      else await def.run(event, makeCtx(inv));
    } catch (err) {
      error = errorText(err);
    }
    // The run that ends here is still being timed: count it before reporting.
    const started = busy[0] as number;
    const spent = (cpu.get(inv) as number) + (started > 0 && busy[1] === inv ? now() - started : 0);
    cpu.delete(inv);
    post(error === undefined ? { t: 'done', inv, skipped, cpuMs: spent } : { t: 'done', inv, error, cpuMs: spent });
  };

  port.on('message', (m: ToWorker) => {
    if (m.t === 'run') {
      beginRun(m.inv);
      run(m.inv, m.event).catch(() => undefined);
      return;
    }
    const p = pending.get(m.call);
    if (p === undefined) return;
    pending.delete(m.call);
    beginRun(p.inv);
    if (m.ok) p.resolve(m.value);
    else p.reject(new Error(m.error));
  });

  post({ t: 'ready', definition: describe(def) });
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
