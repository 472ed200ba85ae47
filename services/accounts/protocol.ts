// The accounts service on the bus: request/reply subjects (queue group `accounts`, so several instances share the
// load) and one broadcast of what verifiers must refuse. The broker's REST routes (services/broker/accounts-api.ts)
// and API key verifiers (verifier.ts) speak this; nothing else reaches the database.
//
// Passwords and keys cross the bus in these requests: in one process that is memory; between processes run NATS
// with TLS (docs/accounts.md). No subject carries a secret in its name.
import { PREFIX } from '../bus/subjects.ts';
import type { OrgRole } from './records.ts';

export const ACCOUNTS_QUEUE = 'accounts';

export const accountsSubjects = {
  login: `${PREFIX}.accounts.login`,
  refresh: `${PREFIX}.accounts.refresh`,
  logout: `${PREFIX}.accounts.logout`,
  verifyKey: `${PREFIX}.accounts.verify-key`,
  keysCreate: `${PREFIX}.accounts.keys.create`,
  keysList: `${PREFIX}.accounts.keys.list`,
  keysRevoke: `${PREFIX}.accounts.keys.revoke`,
  pinsCreate: `${PREFIX}.accounts.pins.create`,
  pinsPoll: `${PREFIX}.accounts.pins.poll`,
  pinsClaim: `${PREFIX}.accounts.pins.claim`,
  orgsList: `${PREFIX}.accounts.orgs.list`,
  orgsCreate: `${PREFIX}.accounts.orgs.create`,
  usersList: `${PREFIX}.accounts.users.list`,
  usersDisable: `${PREFIX}.accounts.users.disable`,
  usersCreate: `${PREFIX}.accounts.users.create`,
  usersRole: `${PREFIX}.accounts.users.role`,
  usersPassword: `${PREFIX}.accounts.users.password`,
  invitationsCreate: `${PREFIX}.accounts.invitations.create`,
  invitationsAccept: `${PREFIX}.accounts.invitations.accept`,
  /** Broadcast: the full list of revoked key ids and disabled user ids, whenever it changes. */
  revoked: `${PREFIX}.accounts.revoked`,
  /** Request: the same list now (a verifier starting up). */
  revokedGet: `${PREFIX}.accounts.revoked.get`,
} as const;

/** Who asks, as the broker authenticated them (the service trusts the broker for this, not the client). */
export interface Caller {
  sub: string;
  role: string;
  org?: string;
  /** The token's id: `user.<user id>.…` proves the caller is that user (a key's `sub` could be any name). */
  jti?: string;
}

export interface Failure {
  ok: false;
  /** HTTP status for the REST route that relays it. */
  status: number;
  error: string;
  message: string;
}

export type Reply<T> = ({ ok: true } & T) | Failure;

export interface LoginRequest {
  username: string;
  password: string;
  /** Organisation name to act in; default the user's first. */
  org?: string;
  /** The client's address, for the per-address limit. */
  address: string;
}

export interface SessionReply {
  accessToken: string;
  expiresIn: number;
  /** The refresh credential (`myr_…`), for the httpOnly cookie only. */
  refresh: string;
  refreshMaxAgeSeconds: number;
}

export interface VerifiedKey {
  sub: string;
  role: OrgRole | 'node' | 'gateway';
  org: string;
  jti: string;
  /** Seconds since the epoch, when the key has an expiry. */
  exp?: number;
  node?: string;
}

export interface RevokedList {
  keys: string[];
  users: string[];
}

/** The token id of an API key's sessions, and of a user's access tokens: a revocation names the part before `.`. */
export const keyJti = (keyId: string): string => `key.${keyId}`;
export const userJti = (userId: string, unique: string): string => `user.${userId}.${unique}`;

export const encode = (value: unknown): Uint8Array => Buffer.from(JSON.stringify(value));

/**
 * Looks like an API key (so a verifier asks the accounts service rather than checking a JWT). Here, not in
 * secrets.ts, so the broker's verifier does not load the password hashing library.
 */
export function isApiKeyText(text: string): boolean {
  return text.startsWith('myk_');
}
