// The one bearer-token check of the broker's REST routes (http-api.ts and accounts-api.ts): a JWT or an API key
// in Authorization (or the other places extractToken reads), verified by the broker's HttpAuth. On success the
// claims are on req.claims; otherwise 401 with WWW-Authenticate, counted as a rejection by its reason.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { extractToken, type TokenClaims, type VerifyResult } from '../common/tokens.ts';
import { ErrorCode } from '../protocol/errors.ts';
import type { Role } from '../protocol/messages.ts';
import type { BrokerCounters } from './ports.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who the request is, once authenticateHook passed it. */
    claims?: TokenClaims;
  }
}

/** Every role a person or script may have: all of them may read. */
export const READ_ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];

export interface AuthHookDeps {
  auth: { verify(token: string | undefined, roles: readonly Role[]): Promise<VerifyResult> };
  counters: Pick<BrokerCounters, 'rejected'>;
}

export interface AuthHookOptions {
  /**
   * Read per request (the broker's --allow-anonymous-viewers): true lets a request without any token in as an
   * anonymous viewer. A token that is present is still checked. Absent: a token is always needed.
   */
  anonymousViewers?: () => boolean;
}

export type AuthHook = (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

export function authenticateHook(deps: AuthHookDeps, options: AuthHookOptions = {}): AuthHook {
  return async (req, reply) => {
    const { token } = extractToken(req.headers, undefined);
    if (token === undefined && options.anonymousViewers?.() === true) {
      req.claims = { sub: 'anonymous', role: 'viewer' };
      return;
    }
    const result = await deps.auth.verify(token, READ_ROLES);
    if (!result.ok) {
      deps.counters.rejected(`auth-${result.reason}`).inc();
      return reply
        .header('WWW-Authenticate', `Bearer error="invalid_token"`)
        .code(401)
        .send({ error: ErrorCode.Unauthorized, message: `token ${result.reason}` });
    }
    req.claims = result.claims;
  };
}
