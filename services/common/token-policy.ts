// What every token verifier (broker, WebSocket gateway, MQTT gateway) applies beyond the signature: a maximum
// lifetime per role and the shared revocation list. Spread `tokenPolicyOptions` into a service's option table,
// build a TokenPolicy from its config, start it with the service and pass `policy.verifyOptions` to verifyToken.
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { ROLES, type Role } from '../protocol/messages.ts';
import type { ConfigOf, OptionTable } from './config.ts';
import type { Logger } from './log.ts';
import { DEFAULT_REVOCATION_POLL_MS, RevocationList, revocationFileFor } from './revocations.ts';
import { parseDuration, type VerifyOptions } from './tokens.ts';

/**
 * Longest accepted lifetime per role. Nodes are devices flashed once, so a year; gateways mint 10-minute
 * tokens for themselves and only a static `--token` needs more; people's tokens are short.
 */
export const DEFAULT_MAX_TOKEN_TTL: readonly string[] = [
  'node=365d',
  'gateway=7d',
  'viewer=30d',
  'operator=1d',
  'admin=1d',
];

export const tokenPolicyOptions = {
  maxTokenTtl: {
    type: 'list',
    default: DEFAULT_MAX_TOKEN_TTL,
    description:
      'longest token lifetime (exp - iat) accepted per role, e.g. operator=8h,node=90d; roles not named keep their default; <role>=none lifts the limit',
  },
  revocationFile: {
    type: 'string',
    description: 'revoked token ids, re-read when it changes (default revoked.json beside the key file)',
  },
  revocationPollMs: {
    type: 'number',
    default: DEFAULT_REVOCATION_POLL_MS,
    min: 10,
    description: 'how often the revocation file is checked for changes',
  },
} as const satisfies OptionTable;

export type TokenPolicyConfig = ConfigOf<typeof tokenPolicyOptions>;

/**
 * Reads `role=duration` pairs over the defaults. Throws one MyceliumError listing every bad pair.
 * `none` (or `0`) lifts the limit for that role.
 */
export function parseMaxTokenTtl(pairs: readonly string[]): Partial<Record<Role, number>> {
  const out = new Map<Role, number | undefined>();
  const errors: string[] = [];
  const apply = (pair: string, source: string) => {
    const eq = pair.indexOf('=');
    const role = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (eq < 0 || !(ROLES as readonly string[]).includes(role)) {
      errors.push(`--max-token-ttl (${source}): "${pair}" is not <role>=<duration> with a role of ${ROLES.join(', ')}`);
      return;
    }
    if (value === 'none' || value === '0') {
      out.set(role as Role, undefined);
      return;
    }
    const seconds = parseDuration(value);
    if (seconds === undefined || seconds <= 0) {
      errors.push(`--max-token-ttl (${source}): cannot read "${value}" (examples: 30s, 15m, 1h, 7d, none)`);
      return;
    }
    out.set(role as Role, seconds);
  };
  for (const p of DEFAULT_MAX_TOKEN_TTL) apply(p, 'default');
  for (const p of pairs) apply(p, 'given');
  if (errors.length > 0) throw new MyceliumError(ErrorCode.Config, errors.join('\n'));
  const result: Partial<Record<Role, number>> = {};
  for (const [role, seconds] of out) if (seconds !== undefined) result[role] = seconds;
  return result;
}

/** The maximum lifetime per role and the live revocation list, with the start()/stop() of a component. */
export class TokenPolicy {
  readonly revocations: RevocationList;
  readonly maxTtlSeconds: Partial<Record<Role, number>>;
  /** Pass to verifyToken as its fourth argument. */
  readonly verifyOptions: VerifyOptions;

  constructor(config: TokenPolicyConfig, keyFile: string, log?: Logger) {
    this.maxTtlSeconds = parseMaxTokenTtl(config.maxTokenTtl);
    this.revocations = new RevocationList({
      file: config.revocationFile ?? revocationFileFor(keyFile),
      pollMs: config.revocationPollMs,
      ...(log ? { log: log.child({ component: 'revocations' }) } : {}),
    });
    this.verifyOptions = { revocations: this.revocations, maxTtlSeconds: this.maxTtlSeconds };
  }

  start(): Promise<void> {
    return this.revocations.start();
  }

  stop(): void {
    this.revocations.stop();
  }
}
