// The server's frame parsers: the schemas of messages.ts compiled to JavaScript once, at load (TypeCompiler),
// so the per-frame check is straight-line code with no interpretation. The browser uses dashboard-frames.ts,
// which interprets the same schemas (its CSP forbids the eval that compiling needs).
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { type CheckFactory, describeError, frameParser } from './frame-parser.ts';
import { ACTION_ARGS, type ActionName, ActionOutcome } from './gateway-reports.ts';
import {
  type BrokerToClientMessage,
  type BrokerToGatewayMessage,
  brokerToClientFrames,
  brokerToGatewayFrames,
  type ClientMessage,
  clientFrames,
  type GatewayMessage,
  gatewayFrames,
  WriteOutcome,
} from './messages.ts';
import { type Parsed, stringifySafe } from './schema.ts';

export { MAX_RESOURCES_PER_NODE } from './messages.ts';

/** Compiles a schema to a check function (TypeBox's TypeCompiler: `new Function`, once per schema). */
export const compiledCheck: CheckFactory = (schema: TSchema) => {
  const compiled = TypeCompiler.Compile(schema);
  return { check: (value) => compiled.Check(value), firstError: (value) => compiled.Errors(value).First() };
};

export const parseGatewayFrame: (text: string) => Parsed<GatewayMessage> = frameParser(gatewayFrames, compiledCheck);
export const parseClientFrame: (text: string) => Parsed<ClientMessage> = frameParser(clientFrames, compiledCheck);
export const parseBrokerToGatewayFrame: (text: string) => Parsed<BrokerToGatewayMessage> = frameParser(
  brokerToGatewayFrames,
  compiledCheck,
);
export const parseBrokerToClientFrame: (text: string) => Parsed<BrokerToClientMessage> = frameParser(
  brokerToClientFrames,
  compiledCheck,
);

const actionArgChecks = {
  rediscover: compiledCheck(ACTION_ARGS.rediscover),
  forget: compiledCheck(ACTION_ARGS.forget),
  'set-log-level': compiledCheck(ACTION_ARGS['set-log-level']),
} satisfies Record<ActionName, unknown>;

/**
 * Why `args` do not fit action `name` (ACTION_ARGS), or undefined; absent args are `{}`. Checked by the broker
 * before it sends an action and by the gateway before it runs one: a gateway trusts nothing it receives.
 */
export function actionArgsProblem(name: ActionName, args: unknown): string | undefined {
  const value = args === undefined ? {} : args;
  const check = actionArgChecks[name];
  if (check.check(value)) return undefined;
  const problem = describeError(check.firstError(value));
  // `value must be an object` for args that are not one; `uid is required` for a field: both said of args.
  return problem.startsWith('value') ? `args${problem.slice(5)}` : `args.${problem}`;
}

const outcomeCheck = compiledCheck(ActionOutcome);

/** True when a peer broker's reply to an action is an outcome (bus input: checked like a frame). */
export function isActionOutcome(value: unknown): value is ActionOutcome {
  return outcomeCheck.check(value);
}

const writeOutcomeCheck = compiledCheck(WriteOutcome);

/** True when a peer broker's reply to a write is an outcome (bus input: checked like a frame). */
export function isWriteOutcome(value: unknown): value is WriteOutcome {
  return writeOutcomeCheck.check(value);
}

/**
 * Serializes an outbound message. One call per message, never per recipient. Never throws: undefined when
 * the message cannot be serialized (see stringifySafe); the caller drops and counts it.
 */
export function encode(
  msg: BrokerToClientMessage | BrokerToGatewayMessage | GatewayMessage | ClientMessage,
): string | undefined {
  return stringifySafe(msg);
}
