// The rules service: loads the rule files of a folder, runs each in its own worker (runner.ts), feeds them the
// node events, write results and schedules they subscribe to, and answers the REST API's questions over the
// bus (`myc.rules.api`). It keeps a node table of its own from `myc.events.*` (plus a state sync at start) for
// ctx.node, and reaches devices only through the bus, like a broker's client would.
import { createHash } from 'node:crypto';
import { existsSync, type FSWatcher, readdirSync, readFileSync, rmSync, watch } from 'node:fs';
import { basename, extname, join } from 'node:path';
import type { Bus, BusMsg, BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import { NodeTable, type NodeEvent } from '../broker/node-table.ts';
import { writeFileAtomic } from '../common/files.ts';
import type { Logger } from '../common/log.ts';
import { Metrics } from '../common/metrics.ts';
import { parseBrokerToClientFrame } from '../protocol/frames.ts';
import type { Json } from '../protocol/messages.ts';
import { parseJson, stringifySafe } from '../protocol/schema.ts';
import { type ActionOptions, RuleActions } from './actions.ts';
import { bindExec, type ExecClient } from './exec-binding.ts';
import { globMatches } from './glob.ts';
import { compileRule, isRuleFile } from './loader.ts';
import { Membership } from './membership.ts';
import {
  descriptorProblem,
  MAX_SOURCE_BYTES,
  RULE_NAME_PATTERN,
  type RuleDescriptor,
  RuleErrorCode,
  type RuleRecord,
  type RulesApiReply,
  type RulesApiRequest,
  rulesSubjects,
  type WorkerRuleRecord,
} from './protocol.ts';
import type { RuleEvent } from './rule.ts';
import { RulePool, type RunnerLimits, RuleWorker } from './runner.ts';
import { compileSchedule, type NextFire } from './schedule.ts';
import { FAILURES, RuleStats } from './stats.ts';
import { StateStore } from './state-store.ts';
import { TriggerIndex } from './trigger-index.ts';
import { VirtualNodes } from './virtual-nodes.ts';

export interface RulesServiceOptions extends ActionOptions {
  dir: string;
  stateDir: string;
  /** This worker's id (bus subjects, state sync answers, scale-out). */
  id: string;
  /** The gateway id of the virtual nodes rules emit on. */
  gatewayId: string;
  limits: RunnerLimits;
  /** Failures in a row after which a rule is disabled. */
  maxFailures: number;
  /** Window to gather the brokers' node tables at start (0: none). */
  stateSyncMs: number;
  heartbeatMs: number;
  reloadDebounceMs: number;
  maxVirtualNodes: number;
  /** Runs kept per rule for the API. */
  recentRuns: number;
}

export interface RulesServiceDeps {
  bus: Bus;
  log: Logger;
  metrics?: Metrics;
  exec?: ExecClient;
}

interface Entry {
  file: string;
  name: string;
  status: RuleRecord['status'];
  reason?: string;
  hash?: string;
  descriptor?: RuleDescriptor;
  worker?: RuleWorker;
  stats: RuleStats;
  schedule?: { next: NextFire; timer?: NodeJS.Timeout };
  /** Set while the entry is being replaced or removed: its workers' `exited` runs are not failures. */
  retired?: boolean;
}

class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const NAME = new RegExp(RULE_NAME_PATTERN);

/** Events held during the state sync at most (later ones are dropped: the sync is short). */
const MAX_HELD_EVENTS = 100_000;

/** Longest wait before a schedule is re-armed (setTimeout's limit is 2^31-1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class RulesService {
  readonly table = new NodeTable();
  readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly entries = new Map<string, Entry>();
  private readonly stats = new Map<string, RuleStats>();
  private readonly pool: RulePool;
  private readonly triggers = new TriggerIndex<Entry>(() => this.entries.values());
  private readonly state: StateStore;
  private readonly virtual: VirtualNodes;
  private readonly actions: RuleActions;
  readonly membership: Membership;
  private disabled: Record<string, string> = {};
  private subs: BusSubscription[] = [];
  private watcher?: FSWatcher;
  private readonly pendingReloads = new Map<string, NodeJS.Timeout>();
  private reloading = new Map<string, Promise<void>>();
  private started = false;
  private stopping?: Promise<void>;
  private readonly eventsSubject: string;
  /** `writes`: write results looked at (only while a rule has a write trigger). */
  readonly counters = { events: 0, writes: 0, badEvents: 0 };
  /** Rules enabled or disabled while the disabled list is gathered at start (syncDisabled). */
  private changedDuringSync?: Set<string>;
  /** Events that arrived during the state sync, applied after it. */
  private heldEvents?: BusMsg[];

  constructor(
    readonly options: RulesServiceOptions,
    private readonly deps: RulesServiceDeps,
  ) {
    this.log = deps.log.child({ rules: options.id });
    this.metrics = deps.metrics ?? new Metrics('mycelium_rules_', { defaultMetrics: false });
    this.state = new StateStore(options.stateDir, this.log);
    this.pool = new RulePool({ threads: options.limits.threads });
    this.eventsSubject = subjects.events(`rules-${options.id}`);
    this.virtual = new VirtualNodes({
      bus: deps.bus,
      table: this.table,
      eventsSubject: this.eventsSubject,
      serviceId: `rules-${options.id}`,
      gatewayId: options.gatewayId,
      maxNodes: options.maxVirtualNodes,
    });
    this.actions = new RuleActions(options, {
      bus: deps.bus,
      table: this.table,
      virtual: this.virtual,
      exec: deps.exec ?? bindExec(deps.bus),
      auditSubject: subjects.writes(`rules-${options.id}`),
    });
    this.membership = new Membership(deps.bus, options.id, options.heartbeatMs, this.log);
    this.metrics.gauge('rules', 'rules by status', () => this.count('running'), { status: 'running' });
    this.metrics.gauge('rules', 'rules by status', () => this.count('disabled'), { status: 'disabled' });
    this.metrics.gauge('rules', 'rules by status', () => this.count('failed'), { status: 'failed' });
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.state.start();
    this.disabled = this.state.disabled();
    const bus = this.deps.bus;
    this.subs.push(
      bus.subscribe(subjects.allEvents, (msg) => this.onEvent(msg)),
      bus.subscribe(subjects.allWrites, (msg) => this.onWrite(msg)),
      bus.subscribe(rulesSubjects.api, (msg) => this.onApi(msg), { queue: 'rules-api' }),
      bus.subscribe(rulesSubjects.worker(this.options.id), (msg) => this.onApi(msg)),
      bus.subscribe(rulesSubjects.changed, (msg) => this.onChanged(msg)),
    );
    this.virtual.start();
    this.membership.start();
    await bus.flush();
    await Promise.all([this.syncState(), this.syncDisabled()]);
    // Answered only once this worker's own list is settled (and not to its own question).
    this.subs.push(bus.subscribe(rulesSubjects.disabled, (msg) => this.onDisabledQuery(msg)));
    if (!existsSync(this.options.dir)) throw new Error(`rules folder ${this.options.dir} does not exist`);
    await Promise.all(this.ruleFiles().map((f) => this.reload(f)));
    this.watcher = watch(this.options.dir, (_kind, name) => {
      if (typeof name === 'string' && isRuleFile(name)) this.scheduleReload(name);
    });
    this.watcher.on('error', (err) => this.log.error({ err }, 'rules folder watch failed'));
    this.log.info(
      { dir: this.options.dir, rules: this.count('running'), failed: this.count('failed') },
      'rules service started',
    );
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (!this.started) return;
    this.watcher?.close();
    for (const t of this.pendingReloads.values()) clearTimeout(t);
    this.pendingReloads.clear();
    await Promise.allSettled(this.reloading.values());
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    await Promise.all([...this.entries.values()].map((e) => this.retire(e)));
    this.entries.clear();
    this.triggers.invalidate();
    this.membership.stop();
    this.virtual.stop();
    this.state.flush();
    await this.deps.bus.flush().catch(() => undefined);
    this.log.info('rules service stopped');
  }

  /** The rules as the API reports them. */
  records(): RuleRecord[] {
    return [...this.entries.values()].map((e) => this.record(e)).sort((a, b) => a.name.localeCompare(b.name));
  }

  // ---------------------------------------------------------------------------------------------
  // Loading

  private ruleFiles(): string[] {
    return readdirSync(this.options.dir, { withFileTypes: true })
      .filter((d) => d.isFile() && isRuleFile(d.name))
      .map((d) => d.name)
      .sort();
  }

  private scheduleReload(file: string): void {
    clearTimeout(this.pendingReloads.get(file));
    const t = setTimeout(() => {
      this.pendingReloads.delete(file);
      this.reload(file).catch((err) => this.log.error({ err, file }, 'rule reload failed'));
    }, this.options.reloadDebounceMs);
    t.unref();
    this.pendingReloads.set(file, t);
  }

  /** (Re)loads one file, one reload per file at a time. */
  reload(file: string): Promise<void> {
    const previous = this.reloading.get(file) ?? Promise.resolve();
    const next = previous.then(() => this.doReload(file));
    this.reloading.set(file, next);
    return next.finally(() => {
      if (this.reloading.get(file) === next) this.reloading.delete(file);
    });
  }

  private async doReload(file: string): Promise<void> {
    if (this.stopping) return;
    const path = join(this.options.dir, file);
    const old = this.entries.get(file);
    if (!existsSync(path)) {
      if (old !== undefined) {
        this.entries.delete(file);
        this.triggers.invalidate();
        await this.retire(old);
        this.log.info({ rule: old.name, file }, 'rule removed');
      }
      return;
    }
    const source = readFileSync(path);
    const hash = createHash('sha256').update(source).digest('hex');
    if (old !== undefined && old.hash === hash && old.status !== 'failed') return;
    const fallbackName = basename(file, extname(file));
    const entry: Entry = {
      file,
      name: old?.name ?? fallbackName,
      status: 'loading',
      hash,
      stats: old?.stats ?? this.statsFor(fallbackName),
    };
    this.entries.set(file, entry);
    this.triggers.invalidate();
    if (old !== undefined) await this.retire(old);
    const compiled = await compileRule(path);
    if (!compiled.ok) return this.fail(entry, `does not compile: ${compiled.message}`);
    const worker = new RuleWorker(file, compiled.code, this.options.limits, this.host(entry), this.pool);
    entry.worker = worker;
    const loaded = await worker.load();
    if (!loaded.ok) return this.fail(entry, `does not load: ${loaded.message}`);
    const problem = descriptorProblem(loaded.definition);
    if (problem !== undefined) return this.fail(entry, `is not a valid rule: ${problem}`);
    const d = loaded.definition as RuleDescriptor;
    for (const other of this.entries.values()) {
      if (other !== entry && other.name === d.name && other.status !== 'failed') {
        return this.fail(entry, `the name ${d.name} is already used by ${other.file}`);
      }
    }
    if (d.name !== entry.name) {
      entry.name = d.name;
      entry.stats = this.statsFor(d.name);
    }
    entry.descriptor = d;
    this.triggers.invalidate();
    worker.limitMs = Math.min(d.timeLimitMs ?? this.options.limits.timeLimitMs, this.options.limits.maxTimeLimitMs);
    if (d.on.schedule !== undefined) {
      try {
        entry.schedule = { next: compileSchedule(d.on.schedule) };
      } catch (err) {
        return this.fail(entry, `has a bad schedule: ${(err as Error).message}`);
      }
    }
    if (this.disabled[d.name] !== undefined) {
      entry.status = 'disabled';
      entry.reason = this.disabled[d.name];
      await worker.stop();
      entry.worker = undefined;
    } else {
      entry.status = 'running';
      entry.reason = undefined;
      this.arm(entry);
    }
    this.log.info({ rule: d.name, file, status: entry.status }, old === undefined ? 'rule loaded' : 'rule reloaded');
  }

  /**
   * One RuleStats per rule name for the service's life: a rule removed and added again keeps its counts, and its
   * metrics series are registered once (a second series with the same labels would be a duplicate to Prometheus).
   */
  private statsFor(name: string): RuleStats {
    let s = this.stats.get(name);
    if (s === undefined) {
      s = new RuleStats(name, this.metrics, this.options.recentRuns);
      this.stats.set(name, s);
    }
    return s;
  }

  private async fail(entry: Entry, reason: string): Promise<void> {
    entry.status = 'failed';
    entry.reason = reason.slice(0, 2000);
    entry.stats.lastError = { at: Date.now(), message: entry.reason };
    this.log.warn({ file: entry.file, reason: entry.reason }, 'rule file not loaded; the other rules keep running');
    const w = entry.worker;
    entry.worker = undefined;
    await w?.stop();
  }

  private async retire(entry: Entry): Promise<void> {
    entry.retired = true;
    clearTimeout(entry.schedule?.timer);
    const w = entry.worker;
    entry.worker = undefined;
    await w?.stop();
  }

  private host(entry: Entry) {
    return {
      call: (op: Parameters<RuleActions['call']>[1], args: unknown[]) => this.actions.call(entry.name, op, args),
      log: (level: 'info' | 'warn' | 'error', message: string, detail?: unknown) =>
        this.log[level]({ rule: entry.name, detail }, message),
      saveState: (key: string, value: unknown) => this.state.set(entry.name, key, value),
      state: () => ({ ...this.state.get(entry.name) }),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Triggers

  private arm(entry: Entry): void {
    const s = entry.schedule;
    if (s === undefined || entry.status !== 'running') return;
    const now = Date.now();
    const at = s.next(now);
    if (at === undefined) return;
    s.timer = setTimeout(
      () => {
        if (entry.retired || entry.status !== 'running') return;
        if (Date.now() < at) return this.arm(entry);
        this.arm(entry);
        if (this.membership.owns(`rule:${entry.name}`))
          this.runRule(entry, `rule:${entry.name}`, { type: 'schedule', at }, 'schedule');
      },
      Math.min(Math.max(0, at - now), MAX_TIMER_MS),
    );
    s.timer.unref();
  }

  private onEvent(msg: BusMsg): void {
    // During the state sync, events wait: an update for a node the table learns from the sync would be lost.
    if (this.heldEvents !== undefined) {
      if (this.heldEvents.length < MAX_HELD_EVENTS) this.heldEvents.push(msg);
      return;
    }
    const text = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.length).toString();
    const parsed = parseBrokerToClientFrame(text);
    if (!parsed.ok) {
      this.counters.badEvents++;
      return;
    }
    const e = parsed.value;
    if (e.type !== 'new' && e.type !== 'update' && e.type !== 'out' && e.type !== 'reset') return;
    const event = e as NodeEvent;
    const at = Date.now();
    this.table.apply(event, at);
    this.counters.events++;
    if (!this.membership.owns(event.uid)) return;
    const rules = event.type === 'update' ? this.triggers.candidates(event.endpoint) : this.entries.values();
    for (const entry of rules) {
      if (entry.status !== 'running' || entry.descriptor === undefined) continue;
      const on = entry.descriptor.on;
      switch (event.type) {
        case 'update':
          if (on.update && globMatches(on.update.resource, event.endpoint) && globMatches(on.update.node, event.uid)) {
            const value = event.data as Json;
            this.runRule(
              entry,
              event.uid,
              { type: 'update', uid: event.uid, resource: event.endpoint, value, at },
              'update',
            );
          }
          break;
        case 'new':
          if (on.new && globMatches(on.new.node, event.uid)) {
            this.runRule(
              entry,
              event.uid,
              { type: 'new', uid: event.uid, gateway: event.gateway, status: event.status, at },
              'new',
            );
          }
          break;
        case 'out':
          if (
            on.out &&
            globMatches(on.out.node, event.uid) &&
            (on.out.reason === undefined || globMatches(on.out.reason, event.reason))
          ) {
            this.runRule(entry, event.uid, { type: 'out', uid: event.uid, reason: event.reason, at }, 'out');
          }
          break;
        case 'reset':
          if (on.reset && globMatches(on.reset.node, event.uid)) {
            this.runRule(entry, event.uid, { type: 'reset', uid: event.uid, at }, 'reset');
          }
          break;
      }
    }
  }

  private onWrite(msg: BusMsg): void {
    const rules = this.triggers.writes();
    if (rules.length === 0) return;
    const json = parseJson(Buffer.from(msg.data).toString());
    if (!json.ok || typeof json.value !== 'object' || json.value === null) return;
    const w = json.value as Record<string, unknown>;
    const { uid, resource, by, result } = w;
    if (typeof uid !== 'string' || typeof resource !== 'string' || typeof by !== 'string') return;
    if (result !== 'ok' && result !== 'delivered' && result !== 'error' && result !== 'timeout') return;
    this.counters.writes++;
    if (!this.membership.owns(uid)) return;
    const at = typeof w.at === 'number' ? w.at : Date.now();
    for (const entry of rules) {
      const on = entry.descriptor?.on.write;
      if (entry.status !== 'running' || on === undefined) continue;
      if (!globMatches(on.node, uid) || (on.resource !== undefined && !globMatches(on.resource, resource))) continue;
      const event: RuleEvent = { type: 'write', uid, resource, payload: (w.payload ?? null) as Json, result, by, at };
      if (typeof w.reason === 'string') event.reason = w.reason;
      this.runRule(entry, uid, event, 'write');
    }
  }

  private runRule(entry: Entry, key: string, event: RuleEvent, trigger: string): void {
    const worker = entry.worker;
    if (worker === undefined) return;
    const at = Date.now();
    worker.run(key, event).then(
      (o) => {
        if (entry.retired && o.status === 'exited') return;
        entry.stats.record(at, o, trigger, event.type === 'schedule' ? undefined : event.uid);
        if (FAILURES.has(o.status)) {
          this.log.warn({ rule: entry.name, status: o.status, error: o.error }, 'rule run failed');
          if (entry.stats.consecutiveFailures >= this.options.maxFailures && entry.status === 'running') {
            const reason = `disabled after ${entry.stats.consecutiveFailures} failures in a row (last: ${o.status}: ${o.error ?? ''})`;
            this.disable(entry, reason.slice(0, 2000)).catch((err) => this.log.error({ err }, 'disable failed'));
          }
        }
      },
      (err) => this.log.error({ err, rule: entry.name }, 'rule run failed unexpectedly'),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Enable, disable, sources

  private async disable(entry: Entry, reason: string): Promise<void> {
    entry.status = 'disabled';
    entry.reason = reason;
    clearTimeout(entry.schedule?.timer);
    this.log.warn({ rule: entry.name, reason }, 'rule disabled');
    const w = entry.worker;
    entry.worker = undefined;
    entry.retired = true;
    await w?.stop();
    entry.retired = false;
  }

  private async setDisabled(name: string, reason: string | undefined, broadcast: boolean): Promise<void> {
    if (reason === undefined) delete this.disabled[name];
    else this.disabled[name] = reason;
    this.changedDuringSync?.add(name);
    // Every worker keeps the list in its own --state-dir, so any of them restarting keeps it.
    this.state.saveDisabled(this.disabled);
    if (broadcast) {
      this.deps.bus.publish(
        rulesSubjects.changed,
        Buffer.from(JSON.stringify({ from: this.options.id, name, disabled: reason ?? null })),
      );
    }
    const entry = this.byName(name);
    if (entry === undefined) return;
    if (reason !== undefined) {
      if (entry.status === 'running') await this.disable(entry, reason);
      else if (entry.status === 'disabled') entry.reason = reason;
    } else if (entry.status === 'disabled') {
      entry.stats.consecutiveFailures = 0;
      entry.hash = undefined; // reload from the file: a fresh worker
      await this.reload(entry.file);
    }
  }

  private onChanged(msg: BusMsg): void {
    const json = parseJson(Buffer.from(msg.data).toString());
    if (!json.ok || typeof json.value !== 'object' || json.value === null) return;
    const c = json.value as {
      from?: unknown;
      name?: unknown;
      disabled?: unknown;
      file?: unknown;
      source?: unknown;
      hash?: unknown;
    };
    if (c.from === this.options.id) return;
    if (typeof c.name === 'string' && NAME.test(c.name) && (typeof c.disabled === 'string' || c.disabled === null)) {
      this.setDisabled(c.name, c.disabled === null ? undefined : c.disabled.slice(0, 2000), false).catch((err) =>
        this.log.error({ err }, 'rule change failed'),
      );
    }
    if (typeof c.file !== 'string' || !isRuleFile(c.file) || c.file.includes('/') || c.file.startsWith('.')) return;
    // A source is rule code to run: taken only from a worker this one knows as live. The bus is the boundary
    // (docs/rules.md: allow `myc.rules.>` to rules workers and brokers only), this check keeps a stray client out.
    if (typeof c.source === 'string' && typeof c.hash === 'string' && this.membership.live.includes(String(c.from))) {
      this.adoptSource(c.file, c.source, c.hash);
    }
    this.scheduleReload(c.file);
  }

  /**
   * A source another worker checked and saved. With a shared folder the file here already has it (same hash)
   * and is only reloaded; with a folder of its own, this worker writes it first, so every worker runs it.
   */
  private adoptSource(file: string, source: string, hash: string): void {
    if (Buffer.byteLength(source) > MAX_SOURCE_BYTES) return;
    const path = join(this.options.dir, file);
    const mine = existsSync(path) ? createHash('sha256').update(readFileSync(path)).digest('hex') : undefined;
    if (mine === hash) return;
    if (createHash('sha256').update(source).digest('hex') !== hash) {
      this.log.warn({ file }, 'a saved source whose hash does not match it: ignored');
      return;
    }
    writeFileAtomic(path, source, 0o644);
    this.log.info({ file }, 'rule source saved by another worker written to this folder');
  }

  /**
   * A starting worker adopts the disabled list of the running ones: they saw every enable and disable while it
   * was down. Alone (no answer), it keeps the list of its --state-dir. A change heard during the gather wins.
   */
  private async syncDisabled(): Promise<void> {
    if (this.options.stateSyncMs === 0) return;
    const changed = new Set<string>();
    this.changedDuringSync = changed;
    let replies: BusMsg[];
    try {
      replies = await this.deps.bus.requestMany(
        rulesSubjects.disabled,
        Buffer.from(JSON.stringify({ from: this.options.id })),
        this.options.stateSyncMs,
      );
    } finally {
      this.changedDuringSync = undefined;
    }
    for (const r of replies) {
      const json = parseJson(Buffer.from(r.data).toString());
      if (!json.ok || typeof json.value !== 'object' || json.value === null) continue;
      const { from, disabled } = json.value as { from?: unknown; disabled?: unknown };
      if (from === this.options.id || typeof disabled !== 'object' || disabled === null) continue;
      const adopted: Record<string, string> = Object.create(null);
      for (const [name, reason] of Object.entries(disabled)) {
        if (typeof reason === 'string' && NAME.test(name)) adopted[name] = reason.slice(0, 2000);
      }
      for (const name of changed) {
        if (this.disabled[name] === undefined) delete adopted[name];
        else adopted[name] = this.disabled[name];
      }
      this.disabled = { ...adopted };
      this.state.saveDisabled(this.disabled);
      this.log.info({ from, disabled: Object.keys(adopted).length }, 'disabled rules adopted from a running worker');
      return;
    }
  }

  private onDisabledQuery(msg: BusMsg): void {
    if (msg.reply === undefined) return;
    this.deps.bus.publish(msg.reply, Buffer.from(JSON.stringify({ from: this.options.id, disabled: this.disabled })));
  }

  private byName(name: string): Entry | undefined {
    for (const e of this.entries.values()) if (e.name === name) return e;
    return undefined;
  }

  private record(e: Entry): RuleRecord {
    const s = e.stats;
    const d = e.descriptor;
    const r: RuleRecord = {
      name: e.name,
      file: e.file,
      status: e.status,
      triggers: d === undefined ? [] : Object.entries(d.on).map(([k, v]) => `${k} ${describeTrigger(v)}`.trim()),
      timeLimitMs: Math.min(d?.timeLimitMs ?? this.options.limits.timeLimitMs, this.options.limits.maxTimeLimitMs),
      runs: s.runs,
      errors: s.errors,
      skipped: s.skipped,
      dropped: s.dropped,
      restarts: e.worker?.restarts ?? 0,
      consecutiveFailures: s.consecutiveFailures,
      recent: s.recent.slice(0, this.options.recentRuns),
      worker: this.options.id,
    };
    if (e.reason !== undefined) r.reason = e.reason;
    if (d?.description !== undefined) r.description = d.description;
    const p50 = s.percentileMs(0.5);
    const p99 = s.percentileMs(0.99);
    if (p50 !== undefined && Number.isFinite(p50)) r.p50Ms = p50;
    if (p99 !== undefined && Number.isFinite(p99)) r.p99Ms = p99;
    if (s.recent[0] !== undefined) r.lastRun = s.recent[0];
    if (s.lastError !== undefined) r.lastError = s.lastError;
    return r;
  }

  /** A record with its duration histogram, for the broker to merge with other workers' (merge.ts). */
  private workerRecord(e: Entry): WorkerRuleRecord {
    return { ...this.record(e), buckets: e.stats.buckets() };
  }

  private count(status: RuleRecord['status']): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.status === status) n++;
    return n;
  }

  // ---------------------------------------------------------------------------------------------
  // The API on the bus

  private onApi(msg: BusMsg): void {
    const reply = msg.reply;
    if (reply === undefined) return;
    const answer = (body: RulesApiReply) => {
      const text = stringifySafe(body);
      this.deps.bus.publish(
        reply,
        Buffer.from(text ?? '{"error":"MYC_ERR_UNAVAILABLE","message":"unserializable","status":503}'),
      );
    };
    this.api(msg.data).then(answer, (err) => {
      if (err instanceof ApiProblem) return answer({ error: err.code, message: err.message, status: err.status });
      this.log.error({ err }, 'rules API request failed');
      answer({ error: 'MYC_ERR_UNAVAILABLE', message: 'the rules service failed to answer', status: 503 });
    });
  }

  private async api(data: Uint8Array): Promise<RulesApiReply> {
    const json = parseJson(Buffer.from(data).toString());
    if (!json.ok || typeof json.value !== 'object' || json.value === null) {
      throw new ApiProblem(400, 'MYC_ERR_BAD_SHAPE', 'the request is not a JSON object');
    }
    const req = json.value as unknown as RulesApiRequest;
    if (req.op === 'list') {
      const rules = [...this.entries.values()].map((e) => this.workerRecord(e));
      return {
        rules: rules.sort((a, b) => a.name.localeCompare(b.name)),
        worker: this.options.id,
        workers: this.membership.live,
      };
    }
    const name = (req as { name?: unknown }).name;
    if (typeof name !== 'string' || !NAME.test(name)) {
      throw new ApiProblem(
        400,
        'MYC_ERR_BAD_SHAPE',
        'name must be 1-64 of A-Z a-z 0-9 _ . - (not starting with . _ -)',
      );
    }
    switch (req.op) {
      case 'get':
        return { rule: this.workerRecord(this.mustGet(name)), worker: this.options.id, workers: this.membership.live };
      case 'enable':
      case 'disable': {
        this.mustGet(name);
        if (req.op === 'disable') await this.setDisabled(name, `disabled by ${String(req.by).slice(0, 256)}`, true);
        else await this.setDisabled(name, undefined, true);
        this.log.info({ rule: name, by: req.by, op: req.op }, `rule ${req.op}d`);
        // Enabling reloads the file into a new entry: report that one.
        return { rule: this.record(this.mustGet(name)) };
      }
      case 'get-source': {
        const entry = this.mustGet(name);
        return { name, source: readFileSync(join(this.options.dir, entry.file), 'utf8') };
      }
      case 'put-source':
        return this.putSource(name, req.source, String(req.by));
      default:
        throw new ApiProblem(400, 'MYC_ERR_BAD_SHAPE', 'unknown op');
    }
  }

  private mustGet(name: string): Entry {
    const e = this.byName(name);
    if (e === undefined) throw new ApiProblem(404, RuleErrorCode.UnknownRule, `no rule named ${name}`);
    return e;
  }

  /**
   * Checks a new source in a trial worker (it must compile, load and declare this name) before it replaces the
   * file: a bad save is refused with the reason and the running rule is untouched.
   */
  private async putSource(name: string, source: unknown, by: string): Promise<RulesApiReply> {
    if (typeof source !== 'string') throw new ApiProblem(400, 'MYC_ERR_BAD_SHAPE', 'source must be text');
    if (Buffer.byteLength(source) > MAX_SOURCE_BYTES) {
      throw new ApiProblem(413, 'MYC_ERR_TOO_BIG', `a rule's source may be at most ${MAX_SOURCE_BYTES} bytes`);
    }
    const existing = this.byName(name);
    const file = existing?.file ?? `${name}.ts`;
    // The trial file sits in the folder (so relative imports resolve) under a dot name the watcher ignores.
    const trial = join(this.options.dir, `.${name}.${process.pid}.${Date.now()}.trial.ts`);
    writeFileAtomic(trial, source, 0o600);
    try {
      const compiled = await compileRule(trial);
      if (!compiled.ok) throw new ApiProblem(400, RuleErrorCode.BadRule, `does not compile: ${compiled.message}`);
      const worker = new RuleWorker(
        `${name} (trial)`,
        compiled.code,
        this.options.limits,
        {
          call: async () => {
            throw new Error('a rule does not run while it is checked');
          },
          log: () => undefined,
          saveState: () => undefined,
          state: () => ({}),
        },
        this.pool,
      );
      // A thread of its own: a source that loops or blows up while loading costs no running rule anything.
      worker.isolated = true;
      const loaded = await worker.load();
      await worker.stop();
      if (!loaded.ok) throw new ApiProblem(400, RuleErrorCode.BadRule, `does not load: ${loaded.message}`);
      const problem = descriptorProblem(loaded.definition);
      if (problem !== undefined) throw new ApiProblem(400, RuleErrorCode.BadRule, `is not a valid rule: ${problem}`);
      const declared = (loaded.definition as RuleDescriptor).name;
      if (declared !== name) {
        throw new ApiProblem(400, RuleErrorCode.BadRule, `the source declares the name ${declared}, not ${name}`);
      }
    } finally {
      rmSync(trial, { force: true });
    }
    writeFileAtomic(join(this.options.dir, file), source, 0o644);
    this.log.info({ rule: name, file, by }, 'rule source saved');
    await this.reload(file);
    // The source itself goes along (at most 256 KiB): a worker whose folder is not shared writes it (adoptSource).
    const hash = createHash('sha256').update(source).digest('hex');
    this.deps.bus.publish(
      rulesSubjects.changed,
      Buffer.from(JSON.stringify({ from: this.options.id, file, source, hash })),
    );
    const entry = this.byName(name);
    if (entry === undefined) throw new ApiProblem(503, 'MYC_ERR_UNAVAILABLE', 'the rule was saved but did not load');
    return { rule: this.record(entry) };
  }

  // ---------------------------------------------------------------------------------------------
  // Node state at start

  private async syncState(): Promise<void> {
    if (this.options.stateSyncMs === 0) return;
    this.heldEvents = [];
    let replies: BusMsg[];
    try {
      replies = await this.deps.bus.requestMany(subjects.stateSync, Buffer.from('{}'), this.options.stateSyncMs);
    } finally {
      const held = this.heldEvents;
      this.heldEvents = undefined;
      queueMicrotask(() => {
        for (const m of held) this.onEvent(m);
      });
    }
    let n = 0;
    for (const r of replies) {
      const json = parseJson(Buffer.from(r.data).toString());
      if (!json.ok || typeof json.value !== 'object' || json.value === null) continue;
      const nodes = (json.value as { nodes?: unknown }).nodes;
      if (!Array.isArray(nodes)) continue;
      for (const node of nodes) {
        if (
          typeof node === 'object' &&
          node !== null &&
          typeof node.uid === 'string' &&
          typeof node.gateway === 'string'
        ) {
          if (this.table.adopt(node)) n++;
        }
      }
    }
    this.log.info({ brokers: replies.length, nodes: n }, 'node state synced');
  }
}

function describeTrigger(v: unknown): string {
  if (typeof v !== 'object' || v === null) return '';
  return Object.entries(v)
    .map(([k, x]) => (x === true ? k : `${k}=${String(x)}`))
    .join(' ');
}
