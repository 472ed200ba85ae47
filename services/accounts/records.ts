// What the accounts store holds. Identifiers are random text made by the store (the same on SQLite and
// PostgreSQL, and never guessable from another row's); times are epoch milliseconds.

/** A role inside one organisation. A system admin is a flag on the user, not a role of an organisation. */
export const ORG_ROLES = ['viewer', 'operator', 'admin'] as const;
export type OrgRole = (typeof ORG_ROLES)[number];

export function isOrgRole(value: unknown): value is OrgRole {
  return typeof value === 'string' && (ORG_ROLES as readonly string[]).includes(value);
}

/** Organisation and user names: what a person types on a command line or in a form. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$/;

export interface Org {
  id: string;
  name: string;
  createdAt: number;
}

export interface User {
  id: string;
  name: string;
  /** argon2id PHC string (`$argon2id$v=19$…`); never the password. */
  passwordHash: string;
  systemAdmin: boolean;
  disabled: boolean;
  createdAt: number;
}

export interface Membership {
  orgId: string;
  orgName: string;
  role: OrgRole;
}

export interface ApiKey {
  /** Public id (`mycelium key revoke ID`); also the second part of the key text, so a key names its row. */
  id: string;
  /** SHA-256 of the whole key text, hex. */
  hash: string;
  orgId: string;
  role: OrgRole | 'node' | 'gateway';
  /** The identity a device or gateway key acts as (node uid, gateway id); null for a person's or script's key. */
  nodeUid: string | null;
  label: string;
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
  revoked: boolean;
  /** The user who made it, or null (command line, PIN claim). */
  createdBy: string | null;
}

/** A refresh credential: the browser holds the text in an httpOnly cookie, the store only its hash. */
export interface RefreshSession {
  id: string;
  hash: string;
  userId: string;
  orgId: string | null;
  createdAt: number;
  expiresAt: number;
  revoked: boolean;
}

/** A device's provisioning PIN (rhizo-server's flow): made unclaimed, claimed by a user, delivered once. */
export interface Pin {
  pin: string;
  createdAt: number;
  expiresAt: number;
  orgId: string | null;
  nodeUid: string | null;
  keyId: string | null;
  /** SHA-256 of the secret the device got with its PIN; its poll must show it (migration 3). */
  pollHash: string;
  /** Set once the device's poll received its key; the PIN is then spent. */
  deliveredAt: number | null;
}

export interface Invitation {
  id: string;
  hash: string;
  orgId: string;
  email: string;
  role: OrgRole;
  createdAt: number;
  expiresAt: number;
  acceptedAt: number | null;
}
