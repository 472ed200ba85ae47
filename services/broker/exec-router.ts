// The device console in the broker (issue 12). Two halves, like writes.ts:
// - requests: a client (WebSocket or REST) asks to run something on a node. The role is checked here (viewers
//   never; operators only commands the node advertises; admins also shell lines and PTYs), the node looked up,
//   and the request sent on the bus (services/console/exec-client.ts) to the broker holding the node's gateway.
//   Every request is audited when it ends, refused ones included.
// - serving: for each gateway connected here, requests arriving on `myc.exec.<gateway>` go to the gateway with an
//   id of this link, and its exec-output/exec-exit frames go back to the one requester that asked.
import { randomUUID } from 'node:crypto';
import type { Bus, BusMsg, BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import type { OptionTable } from '../common/config.ts';
import type { Logger } from '../common/log.ts';
import type { AuditLog } from '../console/audit.ts';
import { type ExecBusMessage, type ExecCall, execOnNode, openPtyOnNode } from '../console/exec-client.ts';
import {
  CONSOLE_RESOURCE,
  type ExecAnswerFrame,
  type ExecExit,
  type ExecFrame,
  type ExecOutput,
  type ExecRequestFrame,
  execRequestFrames,
  exitOf,
  type PtyOpen,
  type Requester,
} from '../protocol/console-messages.ts';
import { compiledCheck } from '../protocol/frames.ts';
import type { BrokerToGatewayMessage, NodeRecord } from '../protocol/messages.ts';
import { parseJson, stringifySafe } from '../protocol/schema.ts';
import type { BrokerCounters } from './ports.ts';

/** A gateway connection as the router sees it. */
export interface ExecTarget {
  readonly gatewayId: string;
  send(msg: BrokerToGatewayMessage): void;
}

export interface ExecRouterOptions {
  /** How long the broker holding the gateway waits for an exit beyond the request's timeout. */
  graceMs: number;
  /** Used as the wait bound of a request that names no timeout (the agent applies its own default). */
  defaultTimeoutMs: number;
  /** Most requests in flight through one gateway connection. */
  maxPerGateway: number;
}

export const EXEC_ROUTER_DEFAULTS: ExecRouterOptions = {
  graceMs: 15_000,
  defaultTimeoutMs: 60_000,
  maxPerGateway: 10_000,
};

export interface ExecRouterDeps {
  brokerId: string;
  bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>;
  log: Logger;
  counters: Pick<BrokerCounters, 'rejected'>;
  table: { get(uid: string): NodeRecord | undefined };
  audit: AuditLog;
  options?: Partial<ExecRouterOptions>;
}

/** A request in progress, as its requester holds it. */
export interface ExecHandle {
  readonly done: Promise<ExecExit>;
  cancel(): void;
  send(frame: { type: 'pty-input'; data: string } | { type: 'pty-resize'; cols: number; rows: number }): void;
}

interface Served {
  session: ExecTarget;
  answerTo: string;
  /** The requester's id (the bus call's). */
  rid: string;
  timer?: NodeJS.Timeout;
}

const requestChecks = new Map(Object.entries(execRequestFrames).map(([type, schema]) => [type, compiledCheck(schema)]));

/** Why `requester` may not make this request (the `reason` of a refused exit), or undefined. */
export function refusalOf(requester: Requester, frame: ExecFrame | PtyOpen, node: NodeRecord): string | undefined {
  if (requester.role !== 'operator' && requester.role !== 'admin') return `role ${requester.role} may not exec`;
  const capability = node.resources[CONSOLE_RESOURCE] as
    | { commands?: Record<string, unknown>; shell?: unknown; pty?: unknown }
    | undefined;
  if (typeof capability !== 'object' || capability === null) return 'node has no console';
  if (frame.type === 'pty-open') {
    if (requester.role !== 'admin') return 'pty needs role admin';
    if (capability.pty !== true) return 'pty not allowed on this node';
    return undefined;
  }
  if ((frame.command === undefined) === (frame.shell === undefined)) return 'give either command or shell';
  if (frame.shell !== undefined) {
    if (requester.role !== 'admin') return 'shell needs role admin';
    if (capability.shell !== true) return 'shell not allowed on this node';
    return undefined;
  }
  const commands = capability.commands;
  if (typeof commands !== 'object' || commands === null || !Object.hasOwn(commands, frame.command as string)) {
    return 'command not allowed';
  }
  return undefined;
}

export class ExecRouter {
  private readonly options: ExecRouterOptions;
  private readonly served = new Map<ExecTarget, BusSubscription>();
  /** Requests sent to a gateway connected here, by the id used on that link. */
  private readonly pending = new Map<string, Served>();
  /** The same, by the requester's answer subject (cancel and PTY input name the request by it). */
  private readonly byAnswer = new Map<string, string>();

  constructor(private readonly deps: ExecRouterDeps) {
    this.options = { ...EXEC_ROUTER_DEFAULTS, ...deps.options };
  }

  // ---------------------------------------------------------------------------------------------
  // Requests (the requester's broker)

  /**
   * Starts `frame` for `requester`; `onOutput` gets its output chunks. Never throws: a refusal or an unknown node
   * is an exit frame at once. Audited when done.
   */
  request(
    requester: Requester,
    frame: ExecFrame | PtyOpen,
    via: string,
    onOutput: (f: ExecOutput) => void,
  ): ExecHandle {
    const at = Date.now();
    const node = this.deps.table.get(frame.uid);
    let call: ExecCall | undefined;
    let done: Promise<ExecExit>;
    const refusal =
      node === undefined
        ? 'unknown-node'
        : node.status === 'offline'
          ? 'node-offline'
          : refusalOf(requester, frame, node);
    if (refusal !== undefined || node === undefined) {
      const status = node === undefined || node.status === 'offline' ? 'error' : 'refused';
      this.deps.counters.rejected(`exec-${status}`).inc();
      this.deps.log.info({ uid: frame.uid, sub: requester.sub, role: requester.role, reason: refusal }, 'exec refused');
      done = Promise.resolve(exitOf(frame.id, status, { reason: refusal }));
    } else if (frame.type === 'pty-open') {
      call = openPtyOnNode(
        this.deps.bus,
        { uid: frame.uid, gateway: node.gateway, cols: frame.cols, rows: frame.rows, requester },
        onOutput,
        {
          graceMs: this.options.graceMs,
        },
      );
      done = call.done;
    } else {
      call = execOnNode(
        this.deps.bus,
        {
          uid: frame.uid,
          gateway: node.gateway,
          requester,
          ...(frame.command === undefined ? {} : { command: frame.command }),
          ...(frame.shell === undefined ? {} : { shell: frame.shell }),
          ...(frame.params === undefined ? {} : { params: frame.params }),
          ...(frame.mode === undefined ? {} : { mode: frame.mode }),
          ...(frame.timeoutMs === undefined ? {} : { timeoutMs: frame.timeoutMs }),
        },
        onOutput,
        { graceMs: this.options.graceMs, defaultTimeoutMs: this.options.defaultTimeoutMs },
      );
      done = call.done;
    }
    const audited = done.then((exit) => {
      const ex = frame.type === 'exec' ? frame : undefined;
      this.deps.audit.append({
        time: new Date(at).toISOString(),
        sub: requester.sub,
        role: requester.role,
        node: frame.uid,
        kind: frame.type === 'pty-open' ? 'pty' : 'exec',
        ...(ex?.command === undefined ? {} : { command: ex.command }),
        ...(ex?.shell === undefined ? {} : { shell: ex.shell }),
        ...(ex?.params === undefined ? {} : { params: ex.params }),
        ...(ex === undefined ? {} : { mode: ex.mode ?? 'output' }),
        status: exit.status,
        code: exit.code,
        signal: exit.signal,
        durationMs: exit.durationMs,
        bytes: exit.bytes,
        truncated: exit.truncated,
        ...(exit.reason === undefined ? {} : { reason: exit.reason }),
        broker: this.deps.brokerId,
        via,
      });
      return exit;
    });
    return {
      done: audited,
      cancel: () => call?.cancel(),
      send: (f) => call?.send(f),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Serving (the broker holding the gateway)

  serveGateway(session: ExecTarget): void {
    const sub = this.deps.bus.subscribe(subjects.exec(session.gatewayId), (msg) => this.onBusRequest(session, msg));
    this.served.set(session, sub);
  }

  /** A newer connection of the same gateway took over: requests in flight answer through it. */
  handOver(previous: ExecTarget, next: ExecTarget): void {
    this.served.get(previous)?.unsubscribe();
    this.served.delete(previous);
    for (const p of this.pending.values()) if (p.session === previous) p.session = next;
  }

  unserveGateway(session: ExecTarget): void {
    this.served.get(session)?.unsubscribe();
    this.served.delete(session);
    for (const [id, p] of this.pending) {
      if (p.session === session) this.end(id, p, exitOf(p.rid, 'error', { reason: 'gateway-lost' }));
    }
  }

  /** An exec-output or exec-exit from a gateway; false when the id is not one this gateway was given. */
  complete(session: ExecTarget, frame: ExecAnswerFrame): boolean {
    const p = this.pending.get(frame.id);
    if (p === undefined || p.session !== session) return false;
    if (frame.type === 'exec-exit') this.end(frame.id, p, { ...frame, id: p.rid });
    else this.publish(p.answerTo, { ...frame, id: p.rid });
    return true;
  }

  stop(): void {
    for (const [id, p] of this.pending) this.end(id, p, exitOf(p.rid, 'error', { reason: 'broker shutting down' }));
    for (const sub of this.served.values()) sub.unsubscribe();
    this.served.clear();
  }

  private onBusRequest(session: ExecTarget, msg: BusMsg): void {
    const json = parseJson(Buffer.from(msg.data).toString());
    const value = json.ok ? (json.value as Partial<ExecBusMessage>) : undefined;
    const frame = value?.frame as ExecRequestFrame | undefined;
    const answerTo = value?.answerTo;
    const check = typeof frame?.type === 'string' ? requestChecks.get(frame.type) : undefined;
    // Bus input: checked like a frame; the answer subject must be one of ours.
    if (
      frame === undefined ||
      check === undefined ||
      !check.check(frame) ||
      typeof answerTo !== 'string' ||
      answerTo !== subjects.execAnswers(frame.id)
    ) {
      this.deps.counters.rejected('bad-bus-exec').inc();
      if (msg.reply) this.reply(msg.reply, { ok: false, reason: 'bad request' });
      return;
    }
    if (frame.type === 'exec' || frame.type === 'pty-open') {
      if (this.byAnswer.has(answerTo)) return this.reply(msg.reply, { ok: false, reason: 'duplicate request' });
      if (this.pending.size >= this.options.maxPerGateway * Math.max(1, this.served.size)) {
        return this.reply(msg.reply, { ok: false, reason: 'busy' });
      }
      const id = randomUUID();
      const p: Served = { session, answerTo, rid: frame.id };
      if (frame.type === 'exec') {
        // A backstop only: the agent ends the command at its timeout; this frees the entry if nothing comes back.
        const ms = (frame.timeoutMs ?? this.options.defaultTimeoutMs) + 2 * this.options.graceMs;
        p.timer = setTimeout(() => this.end(id, p, exitOf(p.rid, 'timeout', { reason: 'no exit from the node' })), ms);
        p.timer.unref();
      }
      this.pending.set(id, p);
      this.byAnswer.set(answerTo, id);
      session.send({ ...frame, id });
      this.reply(msg.reply, { ok: true });
      return;
    }
    const id = this.byAnswer.get(answerTo);
    if (id === undefined) return;
    session.send({ ...frame, id });
  }

  private end(id: string, p: Served, exit: ExecExit): void {
    clearTimeout(p.timer);
    this.pending.delete(id);
    this.byAnswer.delete(p.answerTo);
    this.publish(p.answerTo, exit);
  }

  private publish(subject: string, frame: ExecAnswerFrame): void {
    const text = stringifySafe(frame);
    if (text !== undefined) this.deps.bus.publish(subject, Buffer.from(text));
  }

  private reply(subject: string | undefined, value: { ok: boolean; reason?: string }): void {
    if (subject) this.deps.bus.publish(subject, Buffer.from(JSON.stringify(value)));
  }
}

/** [console] The broker's console options (issue 12). */
export const consoleOptions = {
  auditFile: {
    type: 'string',
    description: 'append one JSON line per console request (exec, shell, pty; refused ones too) to this file (0600)',
  },
  execGraceMs: {
    type: 'number',
    default: EXEC_ROUTER_DEFAULTS.graceMs,
    min: 10,
    description: "how long past a console request's timeout the broker waits for the node's exit frame",
  },
} as const satisfies OptionTable;
