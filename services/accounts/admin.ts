// What an administrator does to accounts, in one place for the command line (cli-main.ts) and the service's REST
// handlers: each checks its input, then writes through the store. Errors are AccountsError with a stable code.
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { isIdentifier } from '../protocol/schema.ts';
import { type ApiKey, isOrgRole, NAME_PATTERN, type Org, type OrgRole, type User } from './records.ts';
import { hashPassword, issueSecret, passwordProblem } from './secrets.ts';
import type { AccountsStore } from './store.ts';

/** The longest API key lifetime `--ttl` accepts; keys without one never expire (revoke them). */
export const MAX_KEY_TTL_SECONDS = 5 * 365 * 86_400;

function bad(message: string): MyceliumError {
  return new MyceliumError(ErrorCode.BadShape, message);
}

function notFound(what: string): MyceliumError {
  return new MyceliumError(ErrorCode.UnknownNode, what);
}

export function checkName(kind: string, name: string | undefined): string {
  if (name === undefined || !NAME_PATTERN.test(name) || name === '__proto__') {
    throw bad(
      `${kind} name must be 1-100 characters of letters, digits and . _ @ + - (starting with a letter or digit)`,
    );
  }
  return name;
}

export async function createOrg(store: AccountsStore, name: string | undefined): Promise<Org> {
  checkName('organisation', name);
  if (await store.orgByName(name as string)) throw bad(`organisation ${name} exists already`);
  return store.createOrg(name as string);
}

export async function requireOrg(store: AccountsStore, name: string | undefined): Promise<Org> {
  const org = name === undefined ? undefined : await store.orgByName(name);
  if (org === undefined) throw notFound(`no organisation ${JSON.stringify(name ?? '')}`);
  return org;
}

export async function requireUser(store: AccountsStore, name: string | undefined): Promise<User> {
  const user = name === undefined ? undefined : await store.userByName(name);
  if (user === undefined) throw notFound(`no user ${JSON.stringify(name ?? '')}`);
  return user;
}

export function checkRole(role: string | undefined): OrgRole {
  if (!isOrgRole(role)) throw bad('role must be viewer, operator or admin');
  return role;
}

export interface AddUser {
  name: string | undefined;
  password: string;
  org?: string;
  role?: string;
  systemAdmin?: boolean;
}

export async function addUser(store: AccountsStore, input: AddUser): Promise<User> {
  const name = checkName('user', input.name);
  const problem = passwordProblem(input.password);
  if (problem !== undefined) throw bad(problem);
  const org = input.org === undefined ? undefined : await requireOrg(store, input.org);
  const role = org === undefined ? undefined : checkRole(input.role ?? 'viewer');
  if (org === undefined && !input.systemAdmin) throw bad('a user needs --org (and --role), or --admin');
  if (await store.userByName(name)) throw bad(`user ${name} exists already`);
  const user = await store.createUser({
    name,
    passwordHash: await hashPassword(input.password),
    systemAdmin: input.systemAdmin === true,
  });
  if (org !== undefined && role !== undefined) await store.setMembership(user.id, org.id, role);
  return user;
}

export async function setPassword(store: AccountsStore, name: string | undefined, password: string): Promise<User> {
  const user = await requireUser(store, name);
  const problem = passwordProblem(password);
  if (problem !== undefined) throw bad(problem);
  await store.setPassword(user.id, await hashPassword(password));
  // A new password ends every session the old one opened.
  await store.revokeRefreshOfUser(user.id);
  return user;
}

export async function disableUser(store: AccountsStore, name: string | undefined, disabled = true): Promise<User> {
  const user = await requireUser(store, name);
  await store.setDisabled(user.id, disabled);
  if (disabled) await store.revokeRefreshOfUser(user.id);
  return user;
}

export interface CreateKey {
  orgId: string;
  role: string | undefined;
  /** A device key: the key acts only as this node (role `node`). */
  node?: string;
  /** A gateway key: the gateway connects as this id (role `gateway`); its nodes belong to the key's org. */
  gateway?: string;
  ttlSeconds?: number;
  label?: string;
  createdBy?: string | null;
  now?: number;
}

/** Makes a key; the returned `text` is the only time anyone sees it. */
export async function createKey(store: AccountsStore, input: CreateKey): Promise<{ key: ApiKey; text: string }> {
  let role: ApiKey['role'];
  const identity = input.node ?? input.gateway;
  if (input.node !== undefined && input.gateway !== undefined) throw bad('a key is for a node or a gateway, not both');
  if (identity !== undefined) {
    const problem = isIdentifier(identity);
    if (problem !== undefined) throw bad(`${input.node !== undefined ? 'node' : 'gateway id'} ${problem}`);
    role = input.node !== undefined ? 'node' : 'gateway';
  } else {
    role = checkRole(input.role);
  }
  if (input.ttlSeconds !== undefined && !(input.ttlSeconds > 0 && input.ttlSeconds <= MAX_KEY_TTL_SECONDS)) {
    throw bad(`ttl must be between 1 s and ${MAX_KEY_TTL_SECONDS} s`);
  }
  const label = input.label ?? '';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (label.length > 100 || /[\u0000-\u001f\u007f]/.test(label)) throw bad('label: at most 100 printable characters');
  const now = input.now ?? Date.now();
  const secret = issueSecret('myk');
  const key = await store.createApiKey({
    id: secret.id,
    hash: secret.hash,
    orgId: input.orgId,
    role,
    nodeUid: identity ?? null,
    label,
    createdAt: now,
    expiresAt: input.ttlSeconds === undefined ? null : now + input.ttlSeconds * 1000,
    createdBy: input.createdBy ?? null,
  });
  return { key, text: secret.text };
}

/** A key as listed: everything but its hash. */
export function publicKeyView(key: ApiKey): Omit<ApiKey, 'hash'> {
  const { hash: _hash, ...rest } = key;
  return rest;
}
