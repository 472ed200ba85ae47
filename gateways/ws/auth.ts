// Who a connecting node is, decided on the HTTP request before the upgrade (ws README, "client authentication"):
// its token's subject, the node a device API key is bound to (asked of the broker, key-check.ts), or (anonymous
// nodes allowed) `?id=` or a fresh uuid as in pyaiot.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isApiKeyText } from '../../services/accounts/protocol.ts';
import { extractToken, verifyToken } from '../../services/common/tokens.ts';
import type { RefusalStatus } from '../../services/common/upgrade.ts';
import type { Role } from '../../services/protocol/messages.ts';
import { isIdentifier } from '../../services/protocol/schema.ts';
import type { TokenChecks } from '../../services/common/token-checks.ts';

const NODE_ROLES: readonly Role[] = ['node'];

export interface Identity {
  uid: string;
  authenticated: boolean;
  /** Token expiry in ms since the epoch; undefined for anonymous nodes. */
  expiresAt?: number;
  jti?: string;
}

export interface IdentityRefusal {
  refuse: string;
  status: RefusalStatus;
  /** Label of rejections_total. */
  counter: string;
}

export async function identify(
  req: IncomingMessage,
  checks: TokenChecks | undefined,
  allowAnonymous: boolean,
): Promise<Identity | IdentityRefusal> {
  const { token } = extractToken(req.headers, req.url);
  if (token === undefined && allowAnonymous) {
    const id = queryParam(req.url, 'id');
    if (id === undefined) return { uid: randomUUID(), authenticated: false };
    const problem = isIdentifier(id);
    if (problem !== undefined) return { refuse: `id ${problem}`, status: 400, counter: 'bad-id' };
    return { uid: id, authenticated: false };
  }
  // [accounts] A device API key: only the broker can say whose it is. Nobody answering is "try later" (503).
  if (token !== undefined && isApiKeyText(token)) return identifyByKey(token, checks);
  if (checks?.key === undefined) {
    return { refuse: 'token cannot be verified (no key)', status: 401, counter: 'auth-no-key' };
  }
  const result = await verifyToken(checks.key, token, NODE_ROLES, checks.verifyOptions);
  if (!result.ok) return { refuse: `token ${result.reason}`, status: 401, counter: `auth-${result.reason}` };
  const problem = isIdentifier(result.claims.sub);
  if (problem !== undefined) return { refuse: `token subject ${problem}`, status: 401, counter: 'auth-bad-sub' };
  const { exp, jti } = result.claims;
  return { uid: result.claims.sub, authenticated: true, expiresAt: exp === undefined ? undefined : exp * 1000, jti };
}

async function identifyByKey(key: string, checks: TokenChecks | undefined): Promise<Identity | IdentityRefusal> {
  if (checks?.nodeKeys === undefined) return { refuse: 'API keys not accepted here', status: 401, counter: 'key-off' };
  const result = await checks.nodeKeys.verifyNodeKey(key);
  if (!result.ok) {
    if (result.unavailable) return { refuse: 'server unavailable', status: 503, counter: 'key-unavailable' };
    return { refuse: `key ${result.reason}`, status: 401, counter: `key-${result.reason}` };
  }
  const { node, exp, jti } = result;
  return { uid: node, authenticated: true, expiresAt: exp === undefined ? undefined : exp * 1000, jti };
}

function queryParam(url: string | undefined, name: string): string | undefined {
  const q = url?.indexOf('?') ?? -1;
  if (url === undefined || q < 0) return undefined;
  return new URLSearchParams(url.slice(q + 1)).get(name) ?? undefined;
}
