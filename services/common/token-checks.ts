// How a service other than the broker checks the tokens presented to it (node tokens on the WebSocket gateway and
// the embedded MQTT broker, viewer tokens on a gateway's or the history's /metrics): the public half of the key
// file, the maximum lifetime per role and the shared revocation list. One place, so they all verify alike.
import type { KeyObject } from 'node:crypto';
import { readPublicKey } from './keys.ts';
import type { Logger } from './log.ts';
import { parseMaxTokenTtl, TokenPolicy, type TokenPolicyConfig } from './token-policy.ts';
import { type VerifyOptions, verifyToken } from './tokens.ts';
import type { Role } from '../protocol/messages.ts';

/** What the gateways need of a revocation list (services/common/revocations.ts provides one). */
export interface Revocations {
  isRevoked(jti?: string): boolean;
}

/**
 * [accounts] A device API key (`myk_…`) checked for a gateway: the node it is bound to, or why not. `unavailable`
 * means nobody could say (the broker link is down, too many checks in flight): the gateway refuses the login with
 * "server unavailable" (HTTP 503, MQTT CONNACK 3), never lets it in.
 */
export type NodeKeyResult =
  | { ok: true; node: string; org?: string; exp?: number; jti: string }
  | { ok: false; reason: string; unavailable: boolean };

export interface NodeKeyChecks {
  verifyNodeKey(text: string): Promise<NodeKeyResult>;
  /** True when `jti` (`key.<id>`) names a key revoked since the session opened. */
  isRevoked(jti?: string): boolean;
}

export interface TokenChecks {
  /** Undefined when the key could not be read and the caller allowed that: every token is then refused. */
  readonly key?: KeyObject;
  /** [accounts] Device API keys, checked through the broker link (absent: an API key is refused like a bad token). */
  readonly nodeKeys?: NodeKeyChecks;
  readonly revocations: Revocations;
  readonly verifyOptions: VerifyOptions;
  stop(): void;
}

export interface TokenCheckSources {
  /** The key file whose public half verifies tokens. */
  keyFile: string;
  /** Given instead of reading keyFile (tests, an embedding process). */
  publicKey?: KeyObject;
  /** Given instead of polling the revocation file of the config. */
  revocations?: Revocations;
}

/**
 * Reads the key and starts the revocation poll. With `keyOptional`, a key that cannot be read is logged and
 * leaves `key` undefined (only the token-free paths work); otherwise it fails start-up with the key's error.
 */
export async function startTokenChecks(
  config: TokenPolicyConfig,
  sources: TokenCheckSources,
  log: Logger,
  keyOptional: boolean,
): Promise<TokenChecks> {
  let key = sources.publicKey;
  if (key === undefined) {
    try {
      key = readPublicKey(sources.keyFile);
    } catch (err) {
      if (!keyOptional) throw err;
      log.warn({ keyFile: sources.keyFile }, 'no key to verify tokens: token-checked paths refuse every request');
    }
  }
  if (sources.revocations !== undefined) {
    const revocations = sources.revocations;
    const verifyOptions = { revocations, maxTtlSeconds: parseMaxTokenTtl(config.maxTokenTtl) };
    return { key, revocations, verifyOptions, stop: () => undefined };
  }
  const policy = new TokenPolicy(config, sources.keyFile, log);
  await policy.start();
  return { key, revocations: policy.revocations, verifyOptions: policy.verifyOptions, stop: () => policy.stop() };
}

/**
 * [accounts] `checks` with device API keys accepted as well: their check, and their revocations added to the
 * list the gateways' session sweeps already walk (so a session opened with a revoked key ends like one whose
 * token was revoked).
 */
export function withNodeKeys(checks: TokenChecks, nodeKeys: NodeKeyChecks): TokenChecks {
  const base = checks.revocations;
  const revocations: Revocations = { isRevoked: (jti) => base.isRevoked(jti) || nodeKeys.isRevoked(jti) };
  return { ...checks, nodeKeys, revocations };
}

/** Who may read a gateway's /metrics (as on the broker): anyone who may read the node table. */
export const METRICS_ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];

/** Checks a /metrics bearer token: undefined when accepted, else why not (the 401's description). */
export async function checkMetricsToken(
  checks: TokenChecks | undefined,
  token: string | undefined,
): Promise<string | undefined> {
  if (checks?.key === undefined) return 'no-key';
  const result = await verifyToken(checks.key, token, METRICS_ROLES, checks.verifyOptions);
  return result.ok ? undefined : result.reason;
}
