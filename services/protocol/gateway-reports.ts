// Gateway inventory, status reports and actions (issue 11, item 7): their frames declared as TypeBox schemas,
// with their caps. A gateway is authenticated but may be compromised, so every report is bounded by its schema:
// key counts, key names (the identifier rule, shorter), numbers finite (TypeBox refuses NaN and Infinity, and
// JSON.parse makes Infinity of 1e999) and >= 0, strings length-capped and free of control characters. messages.ts
// puts these frames in its families; frames.ts compiles them. No I/O, no logging: the dashboard imports it too.
// See docs/protocol.md.
import type { Static } from '@sinclair/typebox';
import { IDENTIFIER_RULE, Identifier, identifierPattern, OneOf, Type } from './schema-parts.ts';

/** Actions a broker may ask of a gateway (`POST /api/v1/gateways/:id/actions/:name`). */
export const ACTION_NAMES = ['rediscover', 'forget', 'set-log-level'] as const;
export type ActionName = (typeof ACTION_NAMES)[number];

/** Levels `set-log-level` accepts (pino's, without the extremes a remote operator has no use for). */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `ok`: done; `error`: tried and failed (`reason`); `unknown-action`: the gateway does not offer it; `bad-args`. */
export const ACTION_RESULTS = ['ok', 'error', 'unknown-action', 'bad-args'] as const;
export type ActionResult = (typeof ACTION_RESULTS)[number];
/** What a client is told: a gateway's result, or the broker's own `timeout` / `unreachable`. */
export const CLIENT_ACTION_RESULTS = [...ACTION_RESULTS, 'timeout', 'unreachable'] as const;

/** Most keys in each count map of a status (node statuses, error kinds), and in an action result's detail. */
export const MAX_REPORT_KEYS = 32;
/** Longest key of a count map: a label, not an identity, so shorter than MAX_ID_LENGTH. */
export const MAX_REPORT_KEY_LENGTH = 64;
/** Longest string a gateway may put in a report (protocol, version, a listen address, a reason). */
export const MAX_REPORT_STRING = 256;
/** Most entries of `inventory.actions` and `inventory.listen`. */
export const MAX_REPORT_LIST = 16;
/** Largest inventory, status or action-result frame the broker accepts (the caps above fit well inside it). */
export const MAX_REPORT_BYTES = 16_384;

/** A string a gateway may report: capped, no control characters (they would break a log line or a card). */
export const ReportString = Type.String({
  maxLength: MAX_REPORT_STRING,
  pattern: '^[^\\u0000-\\u001f\\u007f-\\u009f]*$',
  description: `at most ${MAX_REPORT_STRING} characters, no control characters`,
});

/** A count: a finite number >= 0 (a total, a gauge, a lag). */
const Count = Type.Number({ minimum: 0 });

/** Keys of the report maps: the identifier rule, at most MAX_REPORT_KEY_LENGTH characters. */
const REPORT_KEY_PATTERN = identifierPattern(MAX_REPORT_KEY_LENGTH);

/** A map of label -> count: at most MAX_REPORT_KEYS keys, each a short identifier. */
const CountMap = Type.Record(Type.String({ pattern: REPORT_KEY_PATTERN }), Count, {
  additionalProperties: false,
  maxProperties: MAX_REPORT_KEYS,
  [IDENTIFIER_RULE]: 'identifier-keys',
});

const ReportList = Type.Array(ReportString, { maxItems: MAX_REPORT_LIST });

/** Values an action result may describe itself with: flat, so the dashboard can show them as text. */
export const ActionDetail = Type.Record(
  Type.String({ pattern: REPORT_KEY_PATTERN }),
  Type.Union([ReportString, Type.Number(), Type.Boolean()]),
  { additionalProperties: false, maxProperties: MAX_REPORT_KEYS, [IDENTIFIER_RULE]: 'identifier-keys' },
);
export type ActionDetail = Static<typeof ActionDetail>;

/** Action arguments as a frame carries them: an object, checked per action by ACTION_ARGS before it runs. */
const ArgsObject = Type.Record(Type.String(), Type.Unknown());

/** The arguments of each action: unknown keys are refused, not ignored (a typo must not act on every node). */
export const ACTION_ARGS = {
  rediscover: Type.Object({ uid: Type.Optional(Identifier) }, { additionalProperties: false }),
  forget: Type.Object({ uid: Identifier }, { additionalProperties: false }),
  'set-log-level': Type.Object({ level: OneOf(LOG_LEVELS) }, { additionalProperties: false }),
} as const;

/** Arguments as ACTION_ARGS allows them (a type alias, so it fits a frame's args record). */
export type ActionArgs = {
  uid?: string;
  level?: LogLevel;
};

// ---------------------------------------------------------------------------------------------
// Gateway -> broker (path /gw)

/** What a gateway is, sent once after every (re)connection, before the node replay. */
export const Inventory = Type.Object(
  {
    protocol: ReportString,
    version: ReportString,
    /** When the gateway process started, ms since the epoch. */
    startedAt: Count,
    actions: ReportList,
    /** Where the gateway listens for nodes (`udp://127.0.0.1:5683`). */
    listen: ReportList,
  },
  { title: 'GatewayInventory' },
);
export type Inventory = Static<typeof Inventory>;

/** Totals since the gateway started, sent after connect and every --status-interval seconds. */
export const Status = Type.Object(
  {
    at: Count,
    uptimeS: Count,
    nodes: CountMap,
    messages: Type.Object({ in: Count, out: Count }),
    errors: CountMap,
    reconnects: Count,
    eventLoopLagMs: Count,
  },
  { title: 'GatewayStatus' },
);
export type Status = Static<typeof Status>;

export const GwInventory = Type.Object({ type: Type.Literal('inventory'), ...Inventory.properties });
export type GwInventory = Static<typeof GwInventory>;
export const GwStatus = Type.Object({ type: Type.Literal('status'), ...Status.properties });
export type GwStatus = Static<typeof GwStatus>;

export const GwActionResult = Type.Object({
  type: Type.Literal('action-result'),
  id: Identifier,
  result: OneOf(ACTION_RESULTS),
  reason: Type.Optional(ReportString),
  detail: Type.Optional(ActionDetail),
});
export type GwActionResult = Static<typeof GwActionResult>;

// Broker -> gateway

/** An action as the broker sends it: the name is any short string (a gateway answers unknown-action). */
export const BrAction = Type.Object({
  type: Type.Literal('action'),
  id: Identifier,
  name: ReportString,
  args: Type.Optional(ArgsObject),
});
export type BrAction = Static<typeof BrAction>;

// ---------------------------------------------------------------------------------------------
// Broker -> web client (viewer and up: live, and in the snapshot)

export const ToClientGateway = Type.Object({
  type: Type.Literal('gateway'),
  id: Identifier,
  broker: ReportString,
  connectedAt: Count,
  inventory: Type.Optional(Inventory),
  status: Type.Optional(Status),
});
export type ToClientGateway = Static<typeof ToClientGateway>;

/** The gateway disconnected: the broker drops its report (docs/protocol.md says why). */
export const ToClientGatewayGone = Type.Object({ type: Type.Literal('gateway-gone'), id: Identifier });
export type ToClientGatewayGone = Static<typeof ToClientGatewayGone>;

/** The outcome of an action as a broker tells it: a client's answer, and a peer's bus reply. */
export const ActionOutcome = Type.Object({
  result: OneOf(CLIENT_ACTION_RESULTS),
  reason: Type.Optional(ReportString),
  detail: Type.Optional(ActionDetail),
});
export type ActionOutcome = Static<typeof ActionOutcome>;

/** The answer to a client's `gateway-action` frame (the dashboard's buttons). */
export const ToClientActionResult = Type.Object({
  type: Type.Literal('action-result'),
  id: Identifier,
  gateway: Identifier,
  name: ReportString,
  ...ActionOutcome.properties,
});
export type ToClientActionResult = Static<typeof ToClientActionResult>;

// Web client -> broker: an action over the page's WebSocket (same checks and roles as the REST route).
export const ClGatewayAction = Type.Object({
  type: Type.Literal('gateway-action'),
  id: Identifier,
  gateway: Identifier,
  name: ReportString,
  args: Type.Optional(ArgsObject),
});
export type ClGatewayAction = Static<typeof ClGatewayAction>;

// ---------------------------------------------------------------------------------------------

export function isActionName(name: unknown): name is ActionName {
  return typeof name === 'string' && (ACTION_NAMES as readonly string[]).includes(name);
}

/** Copies only the known fields of a checked inventory (unknown extra fields are never relayed). */
export function cleanInventory(msg: Inventory): Inventory {
  return {
    protocol: msg.protocol,
    version: msg.version,
    startedAt: msg.startedAt,
    actions: [...msg.actions],
    listen: [...msg.listen],
  };
}

/** Copies only the known fields of a checked status. */
export function cleanStatus(msg: Status): Status {
  return {
    at: msg.at,
    uptimeS: msg.uptimeS,
    nodes: copyCounts(msg.nodes),
    messages: { in: msg.messages.in, out: msg.messages.out },
    errors: copyCounts(msg.errors),
    reconnects: msg.reconnects,
    eventLoopLagMs: msg.eventLoopLagMs,
  };
}

function copyCounts(counts: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  // Keys passed the identifier rule (no __proto__), so a plain object is safe and serializes as expected.
  for (const key in counts) out[key] = counts[key];
  return out;
}
