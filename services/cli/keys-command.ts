// `mycelium keys` and `mycelium token`: the key and token tools.
import { existsSync } from 'node:fs';
import { resolveConfig, helpText, type OptionTable } from '../common/config.ts';
import { defaultKeyFile, readPrivateKey, writeKeyPair } from '../common/keys.ts';
import { fatal } from '../common/run.ts';
import { mintToken, parseDuration } from '../common/tokens.ts';
import { ROLES, type Role } from '../protocol/messages.ts';

export const keysOptions = {
  keyFile: { type: 'string', description: 'where to write the private key (default ~/.mycelium/key.pem)' },
  force: {
    type: 'boolean',
    default: false,
    description: 'replace an existing key file (every token signed by the old key stops working)',
  },
  ifMissing: {
    type: 'boolean',
    default: false,
    description: 'do nothing when the key file exists (for container start-up)',
  },
} as const satisfies OptionTable;

export async function keysMain(argv: string[]): Promise<void> {
  const summary = 'Write a new Ed25519 key pair: the private key (mode 0600) and <name>.pub.pem beside it.';
  let config: ReturnType<typeof resolveConfig<typeof keysOptions>>;
  try {
    config = resolveConfig(keysOptions, argv);
  } catch (err) {
    fatal(`mycelium keys: ${(err as Error).message}`);
  }
  if (config.help) return void process.stdout.write(helpText('keys', summary, keysOptions));
  const keyFile = config.keyFile ?? defaultKeyFile();
  if (config.ifMissing && existsSync(keyFile)) return void process.stderr.write(`key file ${keyFile} exists; kept\n`);
  try {
    const { privatePath, publicPath } = writeKeyPair(keyFile, config.force);
    process.stderr.write(`private key: ${privatePath} (0600)\npublic key:  ${publicPath}\n`);
  } catch (err) {
    fatal(`mycelium keys: ${(err as Error).message}`);
  }
}

export const tokenOptions = {
  role: { type: 'string', description: `role: ${ROLES.join(', ')}`, env: false },
  sub: { type: 'string', description: 'subject: gateway id, node id or user name', env: false },
  ttl: { type: 'string', default: '1h', description: 'lifetime: 30s, 15m, 1h, 7d or seconds', env: false },
  keyFile: { type: 'string', description: 'private key file (default ~/.mycelium/key.pem)' },
} as const satisfies OptionTable;

/** Prints the token alone on stdout so scripts can capture it: TOKEN=$(mycelium token --role viewer --sub me). */
export async function tokenMain(argv: string[]): Promise<void> {
  const summary = 'Print a signed token (JWT, EdDSA) on stdout.';
  let config: ReturnType<typeof resolveConfig<typeof tokenOptions>>;
  try {
    config = resolveConfig(tokenOptions, argv);
  } catch (err) {
    fatal(`mycelium token: ${(err as Error).message}`);
  }
  if (config.help) return void process.stdout.write(helpText('token', summary, tokenOptions));
  const problems: string[] = [];
  if (!config.role || !(ROLES as readonly string[]).includes(config.role))
    problems.push(`--role must be one of ${ROLES.join(', ')}`);
  if (!config.sub) problems.push('--sub is required');
  const ttlSeconds = parseDuration(config.ttl);
  if (ttlSeconds === undefined || ttlSeconds <= 0)
    problems.push(`--ttl: cannot read "${config.ttl}" (examples: 30s, 15m, 1h, 7d)`);
  if (problems.length > 0) fatal(`mycelium token: ${problems.join('\n')}`);
  try {
    const key = readPrivateKey(config.keyFile ?? defaultKeyFile());
    const token = await mintToken(key, { role: config.role as Role, sub: config.sub!, ttlSeconds: ttlSeconds! });
    process.stdout.write(`${token}\n`);
  } catch (err) {
    fatal(`mycelium token: ${(err as Error).message}`);
  }
}
