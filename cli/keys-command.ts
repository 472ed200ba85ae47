// `mycelium keys` and `mycelium token`: the key and token tools.
//   mycelium token --role R --sub S [--ttl 1h]       mint (the token alone on stdout, its jti on stderr)
//   mycelium token revoke <jti> [--exp T]            revoke by id
//   mycelium token revoke --token <jwt>              revoke a token (its jti and exp are read from it)
//   mycelium token list-revoked                      show the revocation list
import { createPublicKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { decodeJwt } from 'jose';
import { helpText, type OptionTable, resolveConfig } from '../services/common/config.ts';
import {
  defaultKeyFile,
  publicKeyFileFor,
  readPrivateKey,
  writeKeyPair,
  writePublicKey,
} from '../services/common/keys.ts';
import { fatal } from '../services/common/run.ts';
import { addRevocations, readRevocations, revocationFileFor } from '../services/common/revocations.ts';
import { parseMaxTokenTtl, tokenPolicyOptions } from '../services/common/token-policy.ts';
import { mintToken, parseDuration } from '../services/common/tokens.ts';
import { ROLES, type Role } from '../services/protocol/messages.ts';

export const keysOptions = {
  keyFile: { type: 'string', description: 'where to write the private key (default ~/.mycelium/key.pem)' },
  publicKeyFile: {
    type: 'string',
    description: 'where to write the public key (default <key-file>.pub.pem), e.g. a volume only verifiers mount',
  },
  force: {
    type: 'boolean',
    default: false,
    description: 'replace an existing key file (every token signed by the old key stops working)',
  },
  ifMissing: {
    type: 'boolean',
    default: false,
    description: 'do nothing when the key file exists (for container start-up); still writes a missing public key',
  },
} as const satisfies OptionTable;

export async function keysMain(argv: string[]): Promise<void> {
  const summary =
    'Write a new Ed25519 key pair: the private key (mode 0600) and its public key (<name>.pub.pem beside it, or --public-key-file).';
  let config: ReturnType<typeof resolveConfig<typeof keysOptions>>;
  try {
    config = resolveConfig(keysOptions, argv);
  } catch (err) {
    fatal(`mycelium keys: ${(err as Error).message}`);
  }
  if (config.help) {
    process.stdout.write(helpText('keys', summary, keysOptions));
    return;
  }
  const keyFile = config.keyFile ?? defaultKeyFile();
  const publicPath = config.publicKeyFile ?? publicKeyFileFor(keyFile);
  try {
    if (config.ifMissing && existsSync(keyFile)) {
      // A compose volume made before the public key had its own place: derive it once from the private key.
      if (!existsSync(publicPath)) {
        writePublicKey(publicPath, createPublicKey(readPrivateKey(keyFile)));
        process.stderr.write(`key file ${keyFile} exists; kept. public key written: ${publicPath}\n`);
      } else {
        process.stderr.write(`key file ${keyFile} exists; kept\n`);
      }
      return;
    }
    const written = writeKeyPair(keyFile, config.force, publicPath);
    process.stderr.write(`private key: ${written.privatePath} (0600)\npublic key:  ${written.publicPath}\n`);
  } catch (err) {
    fatal(`mycelium keys: ${(err as Error).message}`);
  }
}

export const tokenOptions = {
  role: { type: 'string', description: `role: ${ROLES.join(', ')}`, env: false },
  sub: { type: 'string', description: 'subject: gateway id, node id or user name', env: false },
  ttl: { type: 'string', default: '1h', description: 'lifetime: 30s, 15m, 1h, 7d or seconds', env: false },
  keyFile: { type: 'string', description: 'private key file (default ~/.mycelium/key.pem)' },
  maxTokenTtl: tokenPolicyOptions.maxTokenTtl,
} as const satisfies OptionTable;

export const revokeOptions = {
  jti: { type: 'string', description: 'id of the token to revoke (or give it as the first argument)', env: false },
  token: {
    type: 'string',
    description: 'the token itself: its jti and expiry are read from it (its signature is not checked)',
    env: false,
  },
  exp: {
    type: 'string',
    description:
      "the token's expiry (seconds since the epoch or an ISO date); the entry is dropped after it. Without it, the entry stays",
    env: false,
  },
  keyFile: {
    type: 'string',
    description: 'key file; the revocation list sits beside it (default ~/.mycelium/key.pem)',
  },
  revocationFile: tokenPolicyOptions.revocationFile,
} as const satisfies OptionTable;

export const listRevokedOptions = {
  keyFile: revokeOptions.keyFile,
  revocationFile: tokenPolicyOptions.revocationFile,
} as const satisfies OptionTable;

const TOKEN_SUMMARY = `Print a signed token (JWT, EdDSA) on stdout, its id (jti) on stderr.

  mycelium token --role <role> --sub <subject> [--ttl 1h]
  mycelium token revoke <jti> [--exp <time>]     (or --token <jwt>)
  mycelium token list-revoked`;

/** Dispatches `mycelium token [revoke | list-revoked]`. */
export async function tokenMain(argv: string[]): Promise<void> {
  if (argv[0] === 'revoke') return revokeMain(argv.slice(1));
  if (argv[0] === 'list-revoked') return listRevokedMain(argv.slice(1));
  return mintMain(argv);
}

/** Prints the token alone on stdout so scripts can capture it: TOKEN=$(mycelium token --role viewer --sub me). */
async function mintMain(argv: string[]): Promise<void> {
  let config: ReturnType<typeof resolveConfig<typeof tokenOptions>>;
  try {
    config = resolveConfig(tokenOptions, argv);
  } catch (err) {
    fatal(`mycelium token: ${(err as Error).message}`);
  }
  if (config.help) {
    process.stdout.write(helpText('token', TOKEN_SUMMARY, tokenOptions));
    return;
  }
  const problems: string[] = [];
  const role = config.role as Role;
  if (!config.role || !(ROLES as readonly string[]).includes(config.role))
    problems.push(`--role must be one of ${ROLES.join(', ')}`);
  if (!config.sub) problems.push('--sub is required');
  const ttlSeconds = parseDuration(config.ttl);
  if (ttlSeconds === undefined || ttlSeconds <= 0)
    problems.push(`--ttl: cannot read "${config.ttl}" (examples: 30s, 15m, 1h, 7d)`);
  let maxTtl: Partial<Record<Role, number>> = {};
  try {
    maxTtl = parseMaxTokenTtl(config.maxTokenTtl);
  } catch (err) {
    problems.push((err as Error).message);
  }
  const max = maxTtl[role];
  if (ttlSeconds !== undefined && max !== undefined && ttlSeconds > max) {
    // Verifiers would refuse it ('ttl-too-long'); better to say so now than hand out a token that never works.
    problems.push(
      `--ttl ${config.ttl} is longer than the maximum for role ${role} (${formatSeconds(max)}); ` +
        `verifiers refuse such a token. Raise it with --max-token-ttl ${role}=<duration> here and on every verifier`,
    );
  }
  if (problems.length > 0) fatal(`mycelium token: ${problems.join('\n')}`);
  try {
    const key = readPrivateKey(config.keyFile ?? defaultKeyFile());
    const token = await mintToken(key, { role, sub: config.sub!, ttlSeconds: ttlSeconds! });
    const { jti, exp } = decodeJwt(token);
    process.stdout.write(`${token}\n`);
    process.stderr.write(`jti: ${jti}  expires: ${new Date((exp ?? 0) * 1000).toISOString()}\n`);
  } catch (err) {
    fatal(`mycelium token: ${(err as Error).message}`);
  }
}

function revocationFile(config: { keyFile?: string; revocationFile?: string }): string {
  return config.revocationFile ?? revocationFileFor(config.keyFile ?? defaultKeyFile());
}

async function revokeMain(argv: string[]): Promise<void> {
  const positional = argv[0] !== undefined && !argv[0].startsWith('-') ? argv[0] : undefined;
  const rest = positional === undefined ? argv : argv.slice(1);
  let config: ReturnType<typeof resolveConfig<typeof revokeOptions>>;
  try {
    config = resolveConfig(revokeOptions, rest);
  } catch (err) {
    fatal(`mycelium token revoke: ${(err as Error).message}`);
  }
  if (config.help) {
    const summary =
      'Add a token id to the revocation list. Brokers and gateways sharing the list refuse the token within seconds.';
    process.stdout.write(helpText('token revoke <jti>', summary, revokeOptions));
    return;
  }
  const problems: string[] = [];
  let jti = positional ?? config.jti;
  let exp: number | undefined;
  if (config.token) {
    try {
      const claims = decodeJwt(config.token);
      if (typeof claims.jti !== 'string' || claims.jti === '') problems.push('--token: the token has no jti');
      else if (jti !== undefined && jti !== claims.jti) problems.push(`--token carries jti ${claims.jti}, not ${jti}`);
      else jti = claims.jti;
      if (typeof claims.exp === 'number') exp = claims.exp;
    } catch (err) {
      problems.push(`--token: cannot decode it (${(err as Error).message})`);
    }
  }
  if (jti === undefined) problems.push('give the token id (mycelium token revoke <jti>) or --token <jwt>');
  if (config.exp !== undefined) {
    const given = parseTime(config.exp);
    if (given === undefined)
      problems.push(`--exp: cannot read "${config.exp}" (seconds since the epoch or an ISO date)`);
    else exp = given;
  }
  if (problems.length > 0) fatal(`mycelium token revoke: ${problems.join('\n')}`);
  const file = revocationFile(config);
  try {
    const list = addRevocations(file, [{ jti: jti!, ...(exp !== undefined ? { exp } : {}) }]);
    process.stderr.write(
      `revoked ${jti} in ${file} (${list.length} on the list)` +
        (exp === undefined
          ? '; without --exp or --token the entry never expires\n'
          : `; kept until ${new Date(exp * 1000).toISOString()}\n`),
    );
  } catch (err) {
    fatal(`mycelium token revoke: ${(err as Error).message}`);
  }
}

async function listRevokedMain(argv: string[]): Promise<void> {
  let config: ReturnType<typeof resolveConfig<typeof listRevokedOptions>>;
  try {
    config = resolveConfig(listRevokedOptions, argv);
  } catch (err) {
    fatal(`mycelium token list-revoked: ${(err as Error).message}`);
  }
  if (config.help) {
    const summary = 'Print the revocation list: one line per token id, with when it was revoked and when it expires.';
    process.stdout.write(helpText('token list-revoked', summary, listRevokedOptions));
    return;
  }
  const file = revocationFile(config);
  try {
    const iso = (s: number | undefined) => (s === undefined ? '-' : new Date(s * 1000).toISOString());
    for (const e of readRevocations(file)) {
      process.stdout.write(`${e.jti}\trevoked ${iso(e.revokedAt)}\texpires ${iso(e.exp)}\n`);
    }
  } catch (err) {
    fatal(`mycelium token list-revoked: ${(err as Error).message}`);
  }
}

/** Seconds since the epoch, or an ISO 8601 date. */
function parseTime(text: string): number | undefined {
  if (/^\d+$/.test(text)) return Number(text);
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

function formatSeconds(s: number): string {
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (s % size === 0) return `${s / size}${unit}`;
  }
  return `${s}s`;
}
