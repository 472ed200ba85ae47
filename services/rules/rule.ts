// The rule API as a rule author sees it: the definition a rule file exports, the events it receives and the
// context it acts through. This module imports nothing, so a rule file may import `rule` from it (the loader
// bundles the import) or not import anything at all: a plain default-exported object of the same shape works.
// `mycelium rules check` type-checks rule files against these declarations.

/** Any JSON value. */
export type RuleJson = null | boolean | number | string | RuleJson[] | { [key: string]: RuleJson };

/** Node globs: `*` matches any run of characters, `?` one character; everything else is literal. */
export type NodeGlob = string;

export interface UpdateEvent {
  type: 'update';
  uid: string;
  resource: string;
  value: RuleJson;
  /** When the rules service received the event (epoch ms). */
  at: number;
}
export interface NewEvent {
  type: 'new';
  uid: string;
  gateway: string;
  status: 'online' | 'offline';
  at: number;
}
export interface OutEvent {
  type: 'out';
  uid: string;
  /** timeout, closed, gateway-lost, replaced, shutdown, removed */
  reason: string;
  at: number;
}
export interface ResetEvent {
  type: 'reset';
  uid: string;
  at: number;
}
/** A write's outcome, as every broker publishes it on `myc.writes.*` (rules' own writes included). */
export interface WriteEvent {
  type: 'write';
  uid: string;
  resource: string;
  payload: RuleJson;
  result: 'ok' | 'delivered' | 'error' | 'timeout';
  reason?: string;
  /** Who asked: a token subject, or `rule:<name>` for a rule's write. */
  by: string;
  at: number;
}
export interface ScheduleEvent {
  type: 'schedule';
  /** The time the schedule fired for (epoch ms). */
  at: number;
}
export type RuleEvent = UpdateEvent | NewEvent | OutEvent | ResetEvent | WriteEvent | ScheduleEvent;

/** What makes a rule run. Each key present is one trigger; a rule may have several. */
export interface Triggers {
  update?: { node: NodeGlob; resource: string; when?: (event: UpdateEvent) => boolean };
  new?: { node: NodeGlob };
  out?: { node: NodeGlob; reason?: string };
  reset?: { node: NodeGlob };
  write?: { node: NodeGlob; resource?: string };
  /** `every: '5m'` (s, m, h, d; at least 1 s) or a five-field cron expression in UTC (`cron: '0 3 * * *'`). */
  schedule?: { every: string } | { cron: string };
}

/** A node as the rules service knows it (from the brokers' events and a state sync at start). */
export interface RuleNode {
  uid: string;
  gateway: string;
  status: 'online' | 'offline';
  lastSeen: number;
  reason?: string;
  resources: Record<string, RuleJson>;
}

export interface WriteOutcome {
  result: 'ok' | 'delivered' | 'error' | 'timeout';
  reason?: string;
}

/** A console command's end (issue 12's `exec-exit`). */
export interface ExecOutcome {
  status: 'ok' | 'ng' | 'error' | 'timeout' | 'cancelled' | 'refused' | 'busy';
  code: number | null;
  output: string;
  truncated: boolean;
  reason?: string;
}

export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** At most the service's --http-timeout-ms. */
  timeoutMs?: number;
}
export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  /** The body as text, cut at 64 KiB. */
  body: string;
}

export interface HistoryQuery {
  /** Epoch ms; default: a day before `to`. */
  from?: number;
  /** Epoch ms; default: now. */
  to?: number;
  limit?: number;
  /** Bucket width (ms) for aggregates. */
  step?: number;
  agg?: 'avg' | 'min' | 'max' | 'sum' | 'count' | 'first' | 'last';
}

/** Small persistent values of one rule: they survive restarts (a JSON file under --state-dir). */
export interface RuleState {
  get<T extends RuleJson = RuleJson>(key: string): T | undefined;
  /** Kept in memory at once, saved soon after; the whole state of a rule may hold 64 KiB of JSON. */
  set(key: string, value: RuleJson): void;
  delete(key: string): void;
  keys(): string[];
}

export interface RuleLog {
  info(message: string, detail?: RuleJson): void;
  warn(message: string, detail?: RuleJson): void;
  error(message: string, detail?: RuleJson): void;
}

export interface RuleContext {
  /** The rule's name. */
  readonly rule: string;
  /** One node's state, or undefined when no broker knows it. */
  node(uid: string): Promise<RuleNode | undefined>;
  /** Every node whose uid matches the glob. */
  nodes(glob?: NodeGlob): Promise<RuleNode[]>;
  /** Writes to a node through the broker holding its gateway, and waits for the result. */
  write(uid: string, resource: string, payload: RuleJson): Promise<WriteOutcome>;
  /** Runs a console command on an agent node (issue 12) and waits for its end. */
  exec(
    uid: string,
    command: string,
    params?: Record<string, string>,
    options?: { timeoutMs?: number },
  ): Promise<ExecOutcome>;
  /** Publishes a value on a virtual node owned by the rules service (created on first emit). */
  emit(uid: string, resource: string, value: RuleJson): Promise<void>;
  /** An HTTP request, only to hosts in the service's --http-allow. */
  http(url: string, request?: HttpRequest): Promise<HttpResponse>;
  /** Stored values of a resource (needs the history service). */
  history(uid: string, resource: string, query?: HistoryQuery): Promise<Array<[number, RuleJson]>>;
  readonly state: RuleState;
  readonly log: RuleLog;
}

export interface RuleDefinition {
  /** 1-64 characters: letters, digits, `-`, `_`, `.`; unique in the folder. */
  name: string;
  description?: string;
  on: Triggers;
  /** Per-invocation CPU limit in ms (default: the service's --time-limit-ms, at most its --max-time-limit-ms). */
  timeLimitMs?: number;
  run(event: RuleEvent, ctx: RuleContext): void | Promise<void>;
}

/** Only adds types: `export default rule({...})` is the same object as `export default {...}`. */
export function rule<T extends RuleDefinition>(definition: T): T {
  return definition;
}
