// Actions the broker asks of a gateway (issue 11, item 7): `rediscover` a node or all, `forget` a node,
// `set-log-level`. This module checks an action frame and dispatches it to a narrow handler each protocol
// implements; the answer is always an `action-result` (never a throw). The broker checks the same rules before
// it sends (services/protocol/gateway-reports.ts, actionArgsProblem): a gateway trusts nothing it receives.
import type { Logger } from '../../services/common/log.ts';
import {
  type ActionDetail,
  type BrAction,
  type GwActionResult,
  isActionName,
  type LogLevel,
  MAX_REPORT_STRING,
  actionArgsProblem,
} from '../../services/protocol/gateway-reports.ts';

export interface ActionOutcome {
  result: 'ok' | 'error';
  reason?: string;
  detail?: ActionDetail;
}

/** What a protocol binding does for each action. */
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
    return { type: 'action-result', id, result: 'unknown-action', reason: `no action ${String(name).slice(0, 40)}` };
  }
  const problem = actionArgsProblem(name, msg.args);
  if (problem !== undefined) return { type: 'action-result', id, result: 'bad-args', reason: problem };
  const args = msg.args ?? {};
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
function reportText(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: replacing control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, MAX_REPORT_STRING);
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
