// Actions for gateways (issue 11, item 7) travel as bus requests to `myc.action.<gateway>`, as writes do
// (writes.ts): the broker holding the gateway's connection sends it an `action` frame with a fresh id and
// replies with the gateway's `action-result`. So an operator on any broker can act on any gateway.
import { randomUUID } from 'node:crypto';
import { type Bus, BusError, type BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import { actionArgsProblem, isActionOutcome } from '../protocol/frames.ts';
import {
  ACTION_NAMES,
  type ActionArgs,
  type ActionName,
  type ActionOutcome,
  type BrAction,
  type GwActionResult,
  isActionName,
} from '../protocol/gateway-reports.ts';
import { parseJson, stringifySafe } from '../protocol/schema.ts';
import type { BrokerCounters } from './ports.ts';

/** What an action came to: the gateway's result, or `timeout` / `unreachable` when there was none. */
export type { ActionOutcome };

/** A gateway connection as the router sees it. */
export interface ActionTarget {
  readonly gatewayId: string;
  send(msg: BrAction): void;
}

export interface ActionRouterDeps {
  bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>;
  counters: Pick<BrokerCounters, 'rejected'>;
  /** --action-timeout-ms */
  timeoutMs: number;
}

interface Pending {
  target: ActionTarget;
  reply: string;
  timer: NodeJS.Timeout;
}

export class ActionRouter {
  private readonly served = new Map<ActionTarget, BusSubscription>();
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly deps: ActionRouterDeps) {}

  /** Asks the gateway (wherever it is connected) to run an action whose name and args were already checked. */
  async request(gatewayId: string, name: ActionName, args: ActionArgs): Promise<ActionOutcome> {
    const text = stringifySafe({ name, args });
    if (text === undefined) return { result: 'bad-args', reason: 'args cannot be serialized' };
    try {
      const reply = await this.deps.bus.request(
        subjects.gatewayAction(gatewayId),
        Buffer.from(text),
        this.deps.timeoutMs,
      );
      return readOutcome(Buffer.from(reply.data).toString());
    } catch (err) {
      if (err instanceof BusError && err.code === 'no-responders') {
        return { result: 'unreachable', reason: 'the gateway is not connected to any broker' };
      }
      if (err instanceof BusError && err.code === 'timeout') return { result: 'timeout', reason: 'no result in time' };
      return { result: 'error', reason: 'bad reply from the broker holding the gateway' };
    }
  }

  serveGateway(target: ActionTarget): void {
    const sub = this.deps.bus.subscribe(subjects.gatewayAction(target.gatewayId), (msg) => {
      if (!msg.reply) return;
      const json = parseJson(Buffer.from(msg.data).toString());
      if (!json.ok || typeof json.value !== 'object' || json.value === null) return;
      const request = json.value as { name: ActionName; args: ActionArgs };
      const id = randomUUID();
      const timer = setTimeout(() => this.pending.delete(id), this.deps.timeoutMs);
      timer.unref();
      this.pending.set(id, { target, reply: msg.reply, timer });
      target.send({ type: 'action', id, name: request.name, args: request.args ?? {} });
    });
    this.served.set(target, sub);
  }

  /** A newer connection replaced `previous`: it takes the actions, and answers those already sent. */
  handOver(previous: ActionTarget, next: ActionTarget): void {
    this.served.get(previous)?.unsubscribe();
    this.served.delete(previous);
    for (const p of this.pending.values()) if (p.target === previous) p.target = next;
  }

  unserveGateway(target: ActionTarget): void {
    this.served.get(target)?.unsubscribe();
    this.served.delete(target);
    for (const [id, p] of this.pending) {
      if (p.target === target) this.finish(id, p, { result: 'unreachable', reason: 'gateway disconnected' });
    }
  }

  /** The gateway answered; false when the id is unknown, expired, or another gateway's. */
  complete(target: ActionTarget, msg: GwActionResult): boolean {
    const p = this.pending.get(msg.id);
    if (p === undefined || p.target !== target) return false;
    const outcome: ActionOutcome = { result: msg.result };
    if (msg.reason !== undefined) outcome.reason = msg.reason;
    if (msg.detail !== undefined) outcome.detail = msg.detail;
    this.finish(msg.id, p, outcome);
    return true;
  }

  stop(): void {
    for (const [id, p] of this.pending) this.finish(id, p, { result: 'unreachable', reason: 'broker shutting down' });
    for (const sub of this.served.values()) sub.unsubscribe();
    this.served.clear();
  }

  private finish(id: string, p: Pending, outcome: ActionOutcome): void {
    clearTimeout(p.timer);
    this.pending.delete(id);
    this.deps.bus.publish(p.reply, Buffer.from(stringifySafe(outcome) ?? '{"result":"error"}'));
  }
}

/** A reply from the broker holding the gateway (a peer's input: checked like a frame, only known fields kept). */
function readOutcome(text: string): ActionOutcome {
  const json = parseJson(text);
  if (!json.ok || !isActionOutcome(json.value)) {
    return { result: 'error', reason: 'bad reply from the broker holding the gateway' };
  }
  const v = json.value;
  const outcome: ActionOutcome = { result: v.result };
  if (v.reason !== undefined) outcome.reason = v.reason;
  if (v.detail !== undefined) outcome.detail = v.detail;
  return outcome;
}

/** Why an action request from a client is refused before it is sent (the same rules for REST and /ws). */
export function actionRequestProblem(
  name: string,
  args: unknown,
): { code: 'MYC_ERR_UNKNOWN_ACTION' | 'MYC_ERR_BAD_SHAPE'; message: string } | undefined {
  if (!isActionName(name)) {
    return { code: 'MYC_ERR_UNKNOWN_ACTION', message: `no action "${name.slice(0, 40)}" (${ACTION_NAMES.join(', ')})` };
  }
  const problem = actionArgsProblem(name, args);
  return problem === undefined ? undefined : { code: 'MYC_ERR_BAD_SHAPE', message: problem };
}
