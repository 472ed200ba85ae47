// The secrets the accounts layer hands out and how each is stored.
//
// API keys, refresh credentials and invitation links are `<prefix>_<id>_<secret>`: the id (16 hex) names the row,
// the secret is 32 random bytes (base64url). The store keeps SHA-256 of the whole text. A slow hash is for
// passwords people choose; 256 random bits cannot be guessed from a fast hash, and SHA-256 keeps verification
// cheap enough to run per request (it is cached anyway). The row is found by id, then the hashes are compared
// with timingSafeEqual, so timing tells nothing about how much of a guessed secret was right.
//
// Passwords: argon2id (@node-rs/argon2) with the library's defaults (19 MiB, 2 passes: OWASP's minimum), PHC string.
import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2';
import { newId } from './store.ts';

export const KEY_PREFIX = 'myk';
export const REFRESH_PREFIX = 'myr';
export const INVITE_PREFIX = 'myi';
export type SecretPrefix = typeof KEY_PREFIX | typeof REFRESH_PREFIX | typeof INVITE_PREFIX;

const SECRET_SHAPE = /^(myk|myr|myi)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface IssuedSecret {
  id: string;
  /** The text given to the holder, once. */
  text: string;
  /** What the store keeps. */
  hash: string;
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function issueSecret(prefix: SecretPrefix): IssuedSecret {
  const id = newId();
  const text = `${prefix}_${id}_${randomBytes(32).toString('base64url')}`;
  return { id, text, hash: sha256Hex(text) };
}

/** The row id a secret names, or undefined when the text is not one of ours with that prefix. */
export function secretId(text: string, prefix: SecretPrefix): string | undefined {
  if (text.length !== 64) return undefined;
  const m = SECRET_SHAPE.exec(text);
  return m !== null && m[1] === prefix ? m[2] : undefined;
}

/** Does `text` hash to `storedHash`? Constant time in the content of both. */
export function secretMatches(text: string, storedHash: string): boolean {
  const given = Buffer.from(sha256Hex(text), 'hex');
  const stored = Buffer.from(storedHash, 'hex');
  return stored.length === given.length && timingSafeEqual(given, stored);
}

export { isApiKeyText } from './protocol.ts';

export const MIN_PASSWORD_LENGTH = 8;
/** argon2 hashes any length, but a megabyte "password" would be a cheap way to burn CPU. */
export const MAX_PASSWORD_LENGTH = 1024;

export function passwordProblem(password: string): string | undefined {
  if (password.length < MIN_PASSWORD_LENGTH) return `a password needs at least ${MIN_PASSWORD_LENGTH} characters`;
  if (password.length > MAX_PASSWORD_LENGTH) return `a password has at most ${MAX_PASSWORD_LENGTH} characters`;
  return undefined;
}

export function hashPassword(password: string): Promise<string> {
  return argon2Hash(password);
}

/** A hash of nothing anyone knows: verifying against it makes "no such user" take as long as "wrong password". */
let decoy: Promise<string> | undefined;

export async function verifyPassword(storedHash: string | undefined, password: string): Promise<boolean> {
  if (password.length > MAX_PASSWORD_LENGTH) return false;
  if (storedHash === undefined) {
    decoy ??= argon2Hash(randomBytes(16).toString('hex'));
    await argon2Verify(await decoy, password).catch(() => false);
    return false;
  }
  try {
    return await argon2Verify(storedHash, password);
  } catch {
    return false;
  }
}

/** A provisioning PIN: 6 decimal digits, uniformly drawn. */
export function newPin(): string {
  return String(randomInt(0, 1_000_000)).padStart(6, '0');
}
