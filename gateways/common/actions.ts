// Actions the broker asks of a gateway (issue 11, item 7): `rediscover` a node or all, `forget` a node,
// `set-log-level`. This module checks an action frame and dispatches it to a narrow handler; the answer is always
// an `action-result` (never a throw). The broker checks the same schemas before it sends (ACTION_ARGS in
// services/protocol/gateway-reports.ts, compiled in frames.ts): a gateway trusts nothing it receives.
// Every gateway gets the same handler (coreActions): the core owns the node table, and the adapter's discover()
// and forget() are what each protocol does differently.
import type { Logger } from '../../services/common/log.ts';
import { actionArgsProblem } from '../../services/protocol/frames.ts';
import {
  type ActionDetail,
  type BrAction,
  type GwActionResult,
  isActionName,
  type LogLevel,
  MAX_REPORT_STRING,
} from '../../services/protocol/gateway-reports.ts';
import type { ForgetReason, TransportHealth } from './adapter.ts';
import type { GatewayNode } from './node-table.ts';

export interface ActionOutcome {
  result: 'ok' | 'error';
  reason?: string;
  detail?: ActionDetail;
}

/** What a gateway does for each action. */
export interface ActionHandler {
  /** Ask one node (or every node when `uid` is absent) for its resources and values again. */
  rediscover(uid?: string): ActionOutcome | Promise<ActionOutcome>;
  /** Drop the node: `out` with reason `removed` to the broker; it is announced afresh if it speaks again. */
  forget(uid: string): ActionOutcome | Promise<ActionOutcome>;
  setLogLevel(level: LogLevel): ActionOutcome | Promise<ActionOutcome>;
}

/** Checks and runs one action; the result names the action's id. */
export async function runAction(
  msg: BrAction,
  handler: ActionHandler | undefined,
  log: Logger,
): Promise<GwActionResult> {
  const { id, name } = msg;
  if (handler === undefined || !isActionName(name)) {
    return { type: 'action-result', id, result: 'unknown-action', reason: `no action ${reportText(name, 40)}` };
  }
  const problem = actionArgsProblem(name, msg.args);
  if (problem !== undefined) return { type: 'action-result', id, result: 'bad-args', reason: reportText(problem) };
  // Checked against ACTION_ARGS[name] just above.
  const args = (msg.args ?? {}) as { uid?: string; level?: LogLevel };
  let outcome: ActionOutcome;
  try {
    switch (name) {
      case 'rediscover':
        outcome = await handler.rediscover(args.uid);
        break;
      case 'forget':
        outcome = await handler.forget(args.uid as string);
        break;
      case 'set-log-level':
        outcome = await handler.setLogLevel(args.level as LogLevel);
        break;
      default: {
        const never: never = name;
        return never;
      }
    }
  } catch (err) {
    log.warn({ err, action: name }, 'action failed');
    outcome = { result: 'error', reason: (err as Error).message };
  }
  log.info({ action: name, args, result: outcome.result, reason: outcome.reason }, 'action from the broker');
  const result: GwActionResult = { type: 'action-result', id, result: outcome.result };
  if (outcome.reason !== undefined) result.reason = reportText(outcome.reason);
  if (outcome.detail !== undefined) result.detail = outcome.detail;
  return result;
}

/** A string the broker accepts in a report: no control characters (an error message may hold a newline), capped. */
function reportText(text: string, max: number = MAX_REPORT_STRING): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: replacing control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, max);
}

/** `set-log-level` for a gateway's loggers (a pino child keeps its own level, so each is set). */
export function setLoggerLevels(level: LogLevel, ...loggers: Logger[]): ActionOutcome {
  const previous = loggers[0]?.level ?? 'info';
  for (const l of new Set(loggers)) l.level = level;
  return { result: 'ok', detail: { level, previous } };
}

/** The answer for a uid the gateway does not hold. */
export function unknownNode(uid: string): ActionOutcome {
  return { result: 'error', reason: `no node ${uid.slice(0, 64)} on this gateway` };
}

/** What the core's action handler uses: its node table, its adapter's discover(), its drop(), its loggers. */
export interface CoreActionDeps<S> {
  node(uid: string): GatewayNode<S> | undefined;
  nodes(): Iterable<GatewayNode<S>>;
  /** The adapter's transport; a rediscover while it is down reaches nobody and says so. */
  health(): TransportHealth;
  /** The adapter's discover(); undefined for a core without an adapter (it cannot ask nodes anything). */
  discoverer(): ((node: GatewayNode<S>) => void) | undefined;
  /** The core drops the node: `out` to the broker, then the adapter lets it go. */
  drop(node: GatewayNode<S>, why: ForgetReason): void;
  loggers(): Logger[];
}

/**
 * The actions of every gateway. rediscover: the adapter's discovery runs again for the node (or all), as after a
 * broker outage (CoAP: GET /.well-known/core and each resource; MQTT: `gateway/<id>/discover`; WebSocket: the
 * discover frame). forget: the node goes out with reason `removed` and the adapter releases it (a WebSocket node
 * is closed); its next message announces it again.
 */
export function coreActions<S>(deps: CoreActionDeps<S>): ActionHandler {
  return {
    rediscover: (uid) => {
      const discover = deps.discoverer();
      if (discover === undefined) return { result: 'error', reason: 'gateway cannot discover nodes' };
      const one = uid === undefined ? undefined : deps.node(uid);
      if (uid !== undefined && one === undefined) return unknownNode(uid);
      const health = deps.health();
      if (!health.up) return { result: 'error', reason: health.detail ?? 'transport down' };
      const nodes = one === undefined ? [...deps.nodes()] : [one];
      for (const node of nodes) discover(node);
      return { result: 'ok', detail: { nodes: nodes.length } };
    },
    forget: (uid) => {
      const node = deps.node(uid);
      if (node === undefined) return unknownNode(uid);
      deps.drop(node, { reason: 'removed' });
      return { result: 'ok' };
    },
    setLogLevel: (level) => setLoggerLevels(level, ...deps.loggers()),
  };
}
