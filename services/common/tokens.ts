// Signed JWTs (EdDSA). Every token has a role, a subject and an expiry; the verifier pins the algorithm
// and checks exp, nbf, iss, aud and the role, allowing a small clock skew.
import { type KeyObject, randomUUID } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { ROLES, type Role } from '../protocol/messages.ts';

export const ISSUER = 'mycelium';
export const AUDIENCE = 'mycelium';
export const CLOCK_SKEW_SECONDS = 30;

export interface TokenClaims {
  sub: string;
  role: Role;
  /** Expiry, seconds since the epoch; a session opened with this token is closed (4401) at this time. */
  exp?: number;
  /** Token id, for revocation (`mycelium token revoke <jti>`). */
  jti?: string;
  /** The organisation the bearer acts in (services/accounts); absent: system-wide, as tokens minted by `mycelium token`. */
  org?: string;
}

export interface MintOptions {
  sub: string;
  role: Role;
  /** Lifetime in seconds. */
  ttlSeconds: number;
  /** The `org` claim (services/accounts); omitted: system-wide. */
  org?: string;
  /** The token id; default a random UUID (the accounts service prefixes the user id so disabling them revokes it). */
  jti?: string;
}

export async function mintToken(
  privateKey: KeyObject,
  { sub, role, ttlSeconds, org, jti }: MintOptions,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(org === undefined ? { role } : { role, org })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' })
    .setJti(jti ?? randomUUID())
    .setSubject(sub)
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(privateKey);
}

/** Why a token was refused; sent to the peer as the body of a 401. */
export type AuthFailure =
  | 'missing'
  | 'malformed'
  | 'bad-signature'
  | 'expired'
  | 'not-yet-valid'
  | 'bad-claims'
  | 'wrong-role'
  /** The token's jti is on the revocation list (`mycelium token revoke`). */
  | 'revoked'
  /** exp - iat exceeds the role's maximum lifetime (`--max-token-ttl`), or iat is missing when a maximum applies. */
  | 'ttl-too-long';

export type VerifyResult = { ok: true; claims: TokenClaims } | { ok: false; reason: AuthFailure };

export interface VerifyOptions {
  /** Revoked token ids; a token whose jti is revoked is refused ('revoked'). */
  revocations?: { isRevoked(jti?: string): boolean };
  /** Longest lifetime (exp - iat, seconds) accepted per role; roles not listed have no maximum. */
  maxTtlSeconds?: Partial<Record<Role, number>>;
}

export async function verifyToken(
  publicKey: KeyObject,
  token: string | undefined,
  allowed: readonly Role[],
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  if (!token) return { ok: false, reason: 'missing' };
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, publicKey, {
      algorithms: ['EdDSA'],
      issuer: ISSUER,
      audience: AUDIENCE,
      clockTolerance: CLOCK_SKEW_SECONDS,
      requiredClaims: ['exp', 'sub'],
    }));
  } catch (err) {
    return { ok: false, reason: classify(err) };
  }
  const role = payload.role;
  if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role) || typeof payload.sub !== 'string') {
    return { ok: false, reason: 'bad-claims' };
  }
  if (!allowed.includes(role as Role)) return { ok: false, reason: 'wrong-role' };
  const claims: TokenClaims = { sub: payload.sub, role: role as Role, exp: payload.exp as number };
  if (typeof payload.jti === 'string') claims.jti = payload.jti;
  if (typeof payload.org === 'string') claims.org = payload.org;
  // A long-lived token is a standing risk if it leaks; the verifier, not the minter, has the last word.
  const maxTtl = options.maxTtlSeconds?.[role as Role];
  if (maxTtl !== undefined) {
    if (typeof payload.iat !== 'number' || (payload.exp as number) - payload.iat > maxTtl) {
      return { ok: false, reason: 'ttl-too-long' };
    }
  }
  if (options.revocations?.isRevoked(claims.jti)) return { ok: false, reason: 'revoked' };
  return { ok: true, claims };
}

function classify(err: unknown): AuthFailure {
  if (err instanceof joseErrors.JWTExpired) return 'expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return err.claim === 'nbf' ? 'not-yet-valid' : 'bad-claims';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad-signature';
  return 'malformed';
}

/** Parses `30s`, `15m`, `1h`, `7d` or plain seconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!m) return undefined;
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

/**
 * Where a WebSocket upgrade or HTTP request carries its token: `Authorization: Bearer`, a `token` query
 * parameter, or (browsers, which cannot set headers on a WebSocket) a subprotocol pair `bearer, <token>`.
 */
export function extractToken(
  headers: Record<string, string | string[] | undefined>,
  url: string | undefined,
): { token?: string; subprotocol?: string } {
  const auth = headers.authorization;
  if (typeof auth === 'string' && /^bearer\s+/i.test(auth)) return { token: auth.replace(/^bearer\s+/i, '').trim() };
  const proto = headers['sec-websocket-protocol'];
  if (typeof proto === 'string') {
    const parts = proto.split(',').map((p) => p.trim());
    const i = parts.findIndex((p) => p === 'bearer' || p === 'token');
    if (i >= 0 && parts[i + 1]) return { token: parts[i + 1], subprotocol: parts[i] };
  }
  if (url?.includes('token=')) {
    const q = url.indexOf('?');
    if (q >= 0) {
      const token = new URLSearchParams(url.slice(q + 1)).get('token');
      if (token) return { token };
    }
  }
  return {};
}
