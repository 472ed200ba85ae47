// Stable error codes. Each protocol error also names the WebSocket close code to send (RFC 6455 §7.4.1).
// docs/errors.md lists them all; keep the two in step.

export const ErrorCode = {
  BadJson: 'MYC_ERR_BAD_JSON',
  BadType: 'MYC_ERR_BAD_TYPE',
  BadShape: 'MYC_ERR_BAD_SHAPE',
  TooBig: 'MYC_ERR_TOO_BIG',
  TooDeep: 'MYC_ERR_TOO_DEEP',
  LimitReached: 'MYC_ERR_LIMIT_REACHED',
  AlreadyRegistered: 'MYC_ERR_ALREADY_REGISTERED',
  RateLimited: 'MYC_ERR_RATE_LIMITED',
  NotOwner: 'MYC_ERR_NOT_OWNER',
  DuplicateUid: 'MYC_ERR_DUPLICATE_UID',
  /** An operator removed the node (DELETE /api/v1/nodes/:uid): its gateway no longer owns the uid. */
  NodeRemoved: 'MYC_ERR_NODE_REMOVED',
  /** A store the broker needs for this request (the JetStream ownership bucket) did not answer. */
  Unavailable: 'MYC_ERR_UNAVAILABLE',
  /** A history query's range, limit, step or aggregate is invalid (HTTP 400). */
  BadRange: 'MYC_ERR_BAD_RANGE',
  UnknownNode: 'MYC_ERR_UNKNOWN_NODE',
  /** No gateway of that id is connected to any broker (GET/POST /api/v1/gateways/:id…). */
  UnknownGateway: 'MYC_ERR_UNKNOWN_GATEWAY',
  /** No gateway action of that name (POST /api/v1/gateways/:id/actions/:name). */
  UnknownAction: 'MYC_ERR_UNKNOWN_ACTION',
  NodeOffline: 'MYC_ERR_NODE_OFFLINE',
  Forbidden: 'MYC_ERR_FORBIDDEN',
  Unauthorized: 'MYC_ERR_UNAUTHORIZED',
  Config: 'MYC_ERR_CONFIG',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** WebSocket close codes we use (RFC 6455 §7.4.1). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  UnsupportedData: 1003,
  PolicyViolation: 1008,
  TooBig: 1009,
  /** Try again later (RFC 6455 §7.4.1 registry): a dependency is unavailable; reconnect with backoff. */
  TryAgainLater: 1013,
  /** Application range (4000-4999): a newer connection with the same identity took over. */
  Replaced: 4001,
  /** The token the connection was opened with has expired or was revoked (like HTTP 401). */
  TokenExpired: 4401,
  /** The broker refused this node's uid: another gateway holds it (MYC_ERR_DUPLICATE_UID; like HTTP 409). */
  UidTaken: 4409,
} as const;

/** An inbound frame that failed validation: what to tell the peer and which close code fits. */
export interface FrameError {
  ok: false;
  code: ErrorCode;
  reason: string;
  close: number;
}

export class MyceliumError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'MyceliumError';
  }
}
