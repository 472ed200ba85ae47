// The browser's frame parser: the same schemas as the server's (messages.ts), interpreted by TypeBox's Value
// module instead of compiled. The dashboard is served with `script-src 'self'` and no 'unsafe-eval'
// (dashboard/server/server.ts), and compiling a schema needs `new Function`; a page handles a few thousand
// frames a second at most, which the interpreter checks in microseconds. Kept apart from frames.ts so the
// page's bundle never carries the compiler. Nor TypeBox's error reporter (31 kB minified, twice the checker):
// a refused frame is counted and logged by the page with its type only (`update: does not match its schema`);
// the broker never sends one, so the detail would serve nobody.
import type { TSchema } from '@sinclair/typebox';
import { Check } from '@sinclair/typebox/value';
import { type CheckFactory, frameParser } from './frame-parser.ts';
import { type BrokerToClientMessage, brokerToClientFrames } from './messages.ts';
import type { Parsed } from './schema.ts';

const interpretedCheck: CheckFactory = (schema: TSchema) => ({
  check: (value) => Check(schema, value),
  firstError: () => undefined,
});

export const parseBrokerToClientFrame: (text: string) => Parsed<BrokerToClientMessage> = frameParser(
  brokerToClientFrames,
  interpretedCheck,
);
