// Gateway inventory, status reports and actions (issue 11, item 7): the frames, their caps and their checks.
// A gateway is authenticated but may be compromised, so every report is bounded here: key counts, key names
// (the identifier rule, shorter), numbers finite and >= 0, strings length-capped. No I/O, no logging, and no
// import of messages.ts (which imports these types): the dashboard imports this module too. See docs/protocol.md.
import { type Check, checkShape, isIdentifier, isRecord, oneOf, optional, type Shape } from './schema.ts';

/** Actions a broker may ask of a gateway (`POST /api/v1/gateways/:id/actions/:name`). */
export const ACTION_NAMES = ['rediscover', 'forget', 'set-log-level'] as const;
export type ActionName = (typeof ACTION_NAMES)[number];

/** Levels `set-log-level` accepts (pino's, without the extremes a remote operator has no use for). */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `ok`: done; `error`: tried and failed (`reason`); `unknown-action`: the gateway does not offer it; `bad-args`. */
export const ACTION_RESULTS = ['ok', 'error', 'unknown-action', 'bad-args'] as const;
export type ActionResult = (typeof ACTION_RESULTS)[number];

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

export interface ActionArgs {
  uid?: string;
  level?: LogLevel;
}

/** Values an action result may describe itself with: flat, so the dashboard can show them as text. */
export type ActionDetail = Record<string, string | number | boolean>;

// ---------------------------------------------------------------------------------------------
// Gateway -> broker (path /gw)

/** Sent once after every (re)connection, before the node replay. */
export interface GwInventory {
  type: 'inventory';
  protocol: string;
  version: string;
  /** When the gateway process started, ms since the epoch. */
  startedAt: number;
  actions: string[];
  /** Where the gateway listens for nodes (`udp://127.0.0.1:5683`). */
  listen: string[];
}

/** Totals since the gateway started, sent after connect and every --status-interval seconds. */
export interface GwStatus {
  type: 'status';
  at: number;
  uptimeS: number;
  nodes: Record<string, number>;
  messages: { in: number; out: number };
  errors: Record<string, number>;
  reconnects: number;
  eventLoopLagMs: number;
}

export interface GwActionResult {
  type: 'action-result';
  id: string;
  result: ActionResult;
  reason?: string;
  detail?: ActionDetail;
}

// Broker -> gateway
export interface BrAction {
  type: 'action';
  id: string;
  name: ActionName;
  args?: ActionArgs;
}

// ---------------------------------------------------------------------------------------------
// Broker -> web client (viewer and up: live, and in the snapshot)

/** The inventory and status a gateway sends, without their `type`. */
export type Inventory = Omit<GwInventory, 'type'>;
export type Status = Omit<GwStatus, 'type'>;

export interface ToClientGateway {
  type: 'gateway';
  id: string;
  broker: string;
  connectedAt: number;
  inventory?: Inventory;
  status?: Status;
}

/** The gateway disconnected: the broker drops its report (docs/protocol.md says why). */
export interface ToClientGatewayGone {
  type: 'gateway-gone';
  id: string;
}

/** The answer to a client's `gateway-action` frame (the dashboard's buttons). */
export interface ToClientActionResult {
  type: 'action-result';
  id: string;
  gateway: string;
  name: string;
  result: ActionResult | 'timeout' | 'unreachable';
  reason?: string;
  detail?: ActionDetail;
}

// Web client -> broker: an action over the page's WebSocket (same checks and roles as the REST route).
export interface ClGatewayAction {
  type: 'gateway-action';
  id: string;
  gateway: string;
  name: string;
  args?: ActionArgs;
}

// ---------------------------------------------------------------------------------------------
// Checks

/** A count: a finite number >= 0 (a total, a gauge, a lag). */
export const isCount: Check = (v) =>
  typeof v === 'number' && Number.isFinite(v) && v >= 0 ? undefined : 'must be a finite number >= 0';

export const isReportString: Check = (v) => {
  if (typeof v !== 'string') return 'must be a string';
  if (v.length > MAX_REPORT_STRING) return `must be at most ${MAX_REPORT_STRING} characters`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters would break a log line or a card
  if (/[\u0000-\u001f\u007f-\u009f]/.test(v)) return 'must not contain control characters';
  return undefined;
};

function reportKey(key: string): string | undefined {
  if (key.length > MAX_REPORT_KEY_LENGTH) return `key must be at most ${MAX_REPORT_KEY_LENGTH} characters`;
  const bad = isIdentifier(key);
  return bad === undefined ? undefined : `key ${JSON.stringify(key.slice(0, 40))} ${bad}`;
}

/** A map of label -> count: at most MAX_REPORT_KEYS keys, each a short identifier. */
export const isCountRecord: Check = (v) => {
  const bad = isRecord(v);
  if (bad !== undefined) return bad;
  let n = 0;
  for (const key in v as Record<string, unknown>) {
    if (++n > MAX_REPORT_KEYS) return `must have at most ${MAX_REPORT_KEYS} keys`;
    const problem = reportKey(key) ?? isCount((v as Record<string, unknown>)[key]);
    if (problem !== undefined) return `${key.slice(0, 40)}: ${problem}`;
  }
  return undefined;
};

/** A list of at most MAX_REPORT_LIST report strings. */
export const isReportList: Check = (v) => {
  if (!Array.isArray(v)) return 'must be an array';
  if (v.length > MAX_REPORT_LIST) return `must have at most ${MAX_REPORT_LIST} entries`;
  for (let i = 0; i < v.length; i++) {
    const problem = isReportString(v[i]);
    if (problem !== undefined) return `[${i}] ${problem}`;
  }
  return undefined;
};

/** A flat detail record: short keys, values that are short strings, counts-like numbers or booleans. */
export const isActionDetail: Check = (v) => {
  const bad = isRecord(v);
  if (bad !== undefined) return bad;
  let n = 0;
  for (const key in v as Record<string, unknown>) {
    if (++n > MAX_REPORT_KEYS) return `must have at most ${MAX_REPORT_KEYS} keys`;
    const value = (v as Record<string, unknown>)[key];
    const problem =
      reportKey(key) ??
      (typeof value === 'boolean'
        ? undefined
        : typeof value === 'number'
          ? Number.isFinite(value)
            ? undefined
            : 'must be finite'
          : isReportString(value));
    if (problem !== undefined) return `${key.slice(0, 40)}: ${problem}`;
  }
  return undefined;
};

const isMessageCounts: Check = (v) =>
  isRecord(v) ?? checkShape(v as Record<string, unknown>, { in: isCount, out: isCount }, 'messages.');

export const inventoryShape: Shape = {
  protocol: isReportString,
  version: isReportString,
  startedAt: isCount,
  actions: isReportList,
  listen: isReportList,
};

export const statusShape: Shape = {
  at: isCount,
  uptimeS: isCount,
  nodes: isCountRecord,
  messages: isMessageCounts,
  errors: isCountRecord,
  reconnects: isCount,
  eventLoopLagMs: isCount,
};

export const actionResultShape: Shape = {
  id: isIdentifier,
  result: oneOf(ACTION_RESULTS),
  reason: optional(isReportString),
  detail: optional(isActionDetail),
};

/** Why `args` do not fit action `name`, or undefined. Checked by the broker before sending and by the gateway. */
export function actionArgsProblem(name: ActionName, args: unknown): string | undefined {
  if (args === undefined)
    return name === 'forget'
      ? 'forget needs args.uid'
      : name === 'set-log-level'
        ? 'set-log-level needs args.level'
        : undefined;
  const bad = isRecord(args);
  if (bad !== undefined) return `args ${bad}`;
  const a = args as Record<string, unknown>;
  for (const key in a) if (key !== 'uid' && key !== 'level') return `args.${key.slice(0, 40)} is not an argument`;
  switch (name) {
    case 'rediscover':
      if (a.level !== undefined) return 'rediscover takes no level';
      return a.uid === undefined ? undefined : prefixed('args.uid', isIdentifier(a.uid));
    case 'forget':
      if (a.level !== undefined) return 'forget takes no level';
      return a.uid === undefined ? 'forget needs args.uid' : prefixed('args.uid', isIdentifier(a.uid));
    case 'set-log-level':
      if (a.uid !== undefined) return 'set-log-level takes no uid';
      return prefixed('args.level', oneOf(LOG_LEVELS)(a.level));
    default: {
      const never: never = name;
      return never;
    }
  }
}

function prefixed(what: string, problem: string | undefined): string | undefined {
  return problem === undefined ? undefined : `${what} ${problem}`;
}

export function isActionName(name: unknown): name is ActionName {
  return typeof name === 'string' && (ACTION_NAMES as readonly string[]).includes(name);
}

/** An action as the broker sends it: the name is any short string (a gateway answers unknown-action). */
export const actionShape: Shape = {
  id: isIdentifier,
  name: isReportString,
  args: optional(isRecord),
};

/** Frames the broker sends to web clients about gateways (the dashboard validates what it receives). */
export const gatewayClientShapes: Record<string, Shape> = {
  gateway: {
    id: isIdentifier,
    broker: isReportString,
    connectedAt: isCount,
    inventory: optional((v) => isRecord(v) ?? checkShape(v as Record<string, unknown>, inventoryShape, 'inventory.')),
    status: optional((v) => isRecord(v) ?? checkShape(v as Record<string, unknown>, statusShape, 'status.')),
  },
  'gateway-gone': { id: isIdentifier },
  'action-result': {
    id: isIdentifier,
    gateway: isIdentifier,
    name: isReportString,
    result: oneOf([...ACTION_RESULTS, 'timeout', 'unreachable']),
    reason: optional(isReportString),
    detail: optional(isActionDetail),
  },
};

export const gatewayActionClientShape: Shape = {
  id: isIdentifier,
  gateway: isIdentifier,
  name: isReportString,
  args: optional(isRecord),
};

/** Copies only the known fields of a checked inventory (unknown extra fields are never relayed). */
export function cleanInventory(msg: GwInventory): Inventory {
  return {
    protocol: msg.protocol,
    version: msg.version,
    startedAt: msg.startedAt,
    actions: [...msg.actions],
    listen: [...msg.listen],
  };
}

/** Copies only the known fields of a checked status, into null-prototype count maps. */
export function cleanStatus(msg: GwStatus): Status {
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
