// Every subject Mycelium uses on the bus. Tokens taken from ids are escaped so a dot or a wildcard
// in a device-chosen id can never change the subject's shape.

export const PREFIX = 'myc';

/** Escapes an id for use as one subject token: anything but [A-Za-z0-9_-] becomes ~hh (UTF-8 bytes). */
export function token(id: string): string {
  return /^[A-Za-z0-9_-]+$/.test(id)
    ? id
    : Array.from(new TextEncoder().encode(id), (b) =>
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || b === 0x2d
          ? String.fromCharCode(b)
          : `~${b.toString(16).padStart(2, '0')}`,
      ).join('');
}

/**
 * The organisation an events subject names (`myc.events.<org>.<broker>`): undefined for none (`_`) and for a token
 * that is not a plain id (organisation ids are).
 */
export function eventsSubjectOrg(subject: string): string | undefined {
  if (subject.startsWith(NO_ORG_EVENTS)) return undefined; // the common case, a system without accounts: cheap
  const start = PREFIX.length + '.events.'.length;
  const end = subject.indexOf('.', start);
  const org = end < 0 ? undefined : subject.slice(start, end);
  return org === undefined || org === NO_ORG || !/^[A-Za-z0-9_-]+$/.test(org) ? undefined : org;
}

/** The organisation token of events that belong to none. */
export const NO_ORG = '_';
const NO_ORG_EVENTS = `${PREFIX}.events.${NO_ORG}.`;

/** An organisation as one subject token; an organisation literally named `_` is escaped, so it never reads as none. */
function orgToken(org: string | undefined): string {
  if (org === undefined) return NO_ORG;
  return org === NO_ORG ? '~5f' : token(org);
}

export const subjects = {
  /**
   * Node events (client frames: new, update, out, reset), published by the broker that owns the gateway, under the
   * node's organisation (`_` for none: a system without accounts, the operator's gateways), so a NATS permission
   * or account can give a service one organisation's events only (`myc.events.<org>.*`).
   */
  events: (brokerId: string, org?: string) => `${PREFIX}.events.${orgToken(org)}.${token(brokerId)}`,
  allEvents: `${PREFIX}.events.*.*`,
  /** One organisation's node events, from every broker. */
  orgEvents: (org: string) => `${PREFIX}.events.${orgToken(org)}.*`,
  /** Write requests to one gateway (request/reply); answered by the broker holding its connection. */
  write: (gatewayId: string) => `${PREFIX}.write.${token(gatewayId)}`,
  /** A broker accepted gateway `id`: any other broker holding an older connection for it closes that one. */
  gatewayClaim: (gatewayId: string) => `${PREFIX}.gateway.${token(gatewayId)}.claim`,
  allGatewayClaims: `${PREFIX}.gateway.*.claim`,
  /** A gateway's inventory and last status, or its departure, from the broker holding it (every broker listens). */
  gatewayReport: (gatewayId: string) => `${PREFIX}.gateway.${token(gatewayId)}.report`,
  allGatewayReports: `${PREFIX}.gateway.*.report`,
  /** Actions for one gateway (request/reply); answered by the broker holding its connection. */
  gatewayAction: (gatewayId: string) => `${PREFIX}.action.${token(gatewayId)}`,
  /** Broker heartbeats: each broker announces itself and the gateways it holds. */
  brokerAlive: (brokerId: string) => `${PREFIX}.broker.${token(brokerId)}.alive`,
  allBrokersAlive: `${PREFIX}.broker.*.alive`,
  /** Request-many: every broker answers with the nodes and gateways it owns (a late broker's snapshot). */
  stateSync: `${PREFIX}.state.sync`,
  /** A write request and its result (`{at, uid, by, resource, payload, result, reason?}`), for the history. */
  writes: (brokerId: string) => `${PREFIX}.writes.${token(brokerId)}`,
  allWrites: `${PREFIX}.writes.*`,
  /** Requests to the history service (request/reply, queue group `history`): see services/history/protocol.ts. */
  historyQuery: `${PREFIX}.history.query`,
  /** A resource's settings changed: every history worker drops its cached copy. */
  historySettings: `${PREFIX}.history.settings`,
  /**
   * [console] Console requests for the nodes behind one gateway (exec, pty-open as request/reply; exec-cancel,
   * pty-input, pty-resize published): answered by the broker holding its connection (services/console).
   */
  exec: (gatewayId: string) => `${PREFIX}.exec.${token(gatewayId)}`,
  /** [console] Where one console request's exec-output and exec-exit frames go back (one per request). */
  execAnswers: (callId: string) => `${PREFIX}.exec-answer.${token(callId)}`,
} as const;
