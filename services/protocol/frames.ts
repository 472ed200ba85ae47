// The server's frame parsers: the schemas of messages.ts compiled to JavaScript once, at load (TypeCompiler),
// so the per-frame check is straight-line code with no interpretation. The browser uses dashboard-frames.ts,
// which interprets the same schemas (its CSP forbids the eval that compiling needs).
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { type CheckFactory, frameParser } from './frame-parser.ts';
import {
  type BrokerToClientMessage,
  type BrokerToGatewayMessage,
  brokerToClientFrames,
  brokerToGatewayFrames,
  type ClientMessage,
  clientFrames,
  type GatewayMessage,
  gatewayFrames,
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

/**
 * Serializes an outbound message. One call per message, never per recipient. Never throws: undefined when
 * the message cannot be serialized (see stringifySafe); the caller drops and counts it.
 */
export function encode(
  msg: BrokerToClientMessage | BrokerToGatewayMessage | GatewayMessage | ClientMessage,
): string | undefined {
  return stringifySafe(msg);
}
