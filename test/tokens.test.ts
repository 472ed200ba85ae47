// Token lifetime limits per role (--max-token-ttl) and revocation, at verification and in `mycelium token`.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { decodeJwt, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_TOKEN_TTL, parseMaxTokenTtl } from '../services/common/token-policy.ts';
import { mintToken, verifyToken } from '../services/common/tokens.ts';
import { makeKeys } from './helpers/keys.ts';

const run = promisify(execFile);
const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;

describe('verifyToken options', () => {
  const keys = makeKeys();

  it('refuses a token whose jti is revoked, and accepts one whose jti is not', async () => {
    const token = await keys.token('operator', 'alice');
    const jti = decodeJwt(token).jti;
    const revoked = new Set([jti]);
    const revocations = { isRevoked: (id?: string) => id !== undefined && revoked.has(id) };
    expect(await verifyToken(keys.publicKey, token, ['operator'], { revocations })).toEqual({
      ok: false,
      reason: 'revoked',
    });
    const other = await keys.token('operator', 'alice');
    expect((await verifyToken(keys.publicKey, other, ['operator'], { revocations })).ok).toBe(true);
  });

  it('refuses a token whose lifetime (exp - iat) exceeds the maximum for its role, and one without iat', async () => {
    const maxTtlSeconds = { operator: 3600 };
    const long = await mintToken(keys.privateKey, { role: 'operator', sub: 'a', ttlSeconds: 3601 });
    const exact = await mintToken(keys.privateKey, { role: 'operator', sub: 'a', ttlSeconds: 3600 });
    const viewer = await mintToken(keys.privateKey, { role: 'viewer', sub: 'a', ttlSeconds: 10 * 86400 });
    const v = (t: string) => verifyToken(keys.publicKey, t, ['operator', 'viewer'], { maxTtlSeconds });
    expect(await v(long)).toEqual({ ok: false, reason: 'ttl-too-long' });
    expect((await v(exact)).ok).toBe(true);
    expect((await v(viewer)).ok).toBe(true); // no maximum given for viewers
    const now = Math.floor(Date.now() / 1000);
    const noIat = await new SignJWT({ role: 'operator' })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setSubject('a')
      .setIssuer('mycelium')
      .setAudience('mycelium')
      .setExpirationTime(now + 60)
      .sign(keys.privateKey);
    expect(await v(noIat)).toEqual({ ok: false, reason: 'ttl-too-long' });
    expect((await verifyToken(keys.publicKey, noIat, ['operator'])).ok).toBe(true); // no maximum, no check
  });
});

describe('--max-token-ttl', () => {
  it('has a default for every role, overrides one role at a time, lifts a limit with none, and names bad pairs', () => {
    const defaults = parseMaxTokenTtl([]);
    expect(defaults).toEqual({
      node: 365 * 86400,
      gateway: 7 * 86400,
      viewer: 30 * 86400,
      operator: 86400,
      admin: 86400,
    });
    expect(DEFAULT_MAX_TOKEN_TTL).toHaveLength(5);
    expect(parseMaxTokenTtl(['operator=8h'])).toEqual({ ...defaults, operator: 8 * 3600 });
    const lifted = parseMaxTokenTtl(['node=none']);
    expect(lifted.node).toBeUndefined();
    expect(() => parseMaxTokenTtl(['emperor=1h', 'viewer=soon', 'nonsense'])).toThrow(
      /"emperor=1h"[\s\S]*cannot read "soon"[\s\S]*"nonsense"/,
    );
  });

  it('mycelium token refuses to mint beyond the maximum for the role, and prints the jti on stderr only', async () => {
    const keys = makeKeys();
    const env = { ...process.env, MYCELIUM_HOME: keys.dir };
    const refused = await run(process.execPath, [BIN, 'token', '--role', 'operator', '--sub', 'me', '--ttl', '2d'], {
      env,
    }).catch((e) => e);
    expect(refused.code).toBe(2);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toMatch(/--ttl 2d is longer than the maximum for role operator \(1d\)/);
    expect(refused.stderr).toContain('--max-token-ttl operator=');
    const ok = await run(
      process.execPath,
      [BIN, 'token', '--role', 'operator', '--sub', 'me', '--ttl', '2d', '--max-token-ttl', 'operator=2d'],
      { env },
    );
    expect(ok.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const { jti } = decodeJwt(ok.stdout.trim());
    expect(ok.stderr).toContain(`jti: ${jti}`);
  }, 60_000);
});
