// The revocation list: `mycelium token revoke` writes it, every verifier sharing the file picks it up.
import { execFile } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { addRevocations, RevocationList, revocationFileFor } from '../services/common/revocations.ts';
import { verifyToken } from '../services/common/tokens.ts';
import { makeKeys } from './helpers/keys.ts';
import { waitFor } from './helpers/wait.ts';

const run = promisify(execFile);
const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;
const lists: RevocationList[] = [];
afterEach(() => {
  for (const l of lists.splice(0)) l.stop();
});

function list(file: string, pollMs = 100, log = pino({ level: 'silent' })): RevocationList {
  const l = new RevocationList({ file, pollMs, log });
  lists.push(l);
  return l;
}

describe('revocation list', () => {
  it('a token revoked with `mycelium token revoke <jti>` is refused by a running verifier within 5 s', async () => {
    const keys = makeKeys();
    const token = await keys.token('operator', 'alice');
    const { jti, exp } = decodeJwt(token);
    // The default poll interval, as a broker runs it.
    const revocations = list(revocationFileFor(keys.keyFile), undefined);
    await revocations.start();
    expect((await verifyToken(keys.publicKey, token, ['operator'], { revocations })).ok).toBe(true);
    let changed = 0;
    revocations.onChange(() => changed++);
    const res = await run(process.execPath, [
      BIN,
      'token',
      'revoke',
      jti!,
      '--exp',
      String(exp),
      '--key-file',
      keys.keyFile,
    ]);
    expect(res.stderr).toContain(`revoked ${jti}`);
    await waitFor(
      async () => !(await verifyToken(keys.publicKey, token, ['operator'], { revocations })).ok,
      'the revocation',
      5000,
    );
    expect(await verifyToken(keys.publicKey, token, ['operator'], { revocations })).toEqual({
      ok: false,
      reason: 'revoked',
    });
    expect(changed).toBe(1);
    // The file is private to its owner and lists the entry with the token's expiry.
    const file = revocationFileFor(keys.keyFile);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const listed = await run(process.execPath, [BIN, 'token', 'list-revoked', '--key-file', keys.keyFile]);
    expect(listed.stdout).toContain(jti);
    expect(listed.stdout).toContain(new Date(exp! * 1000).toISOString());
  }, 60_000);

  it('`mycelium token revoke --token <jwt>` reads the jti and the expiry from the token itself', async () => {
    const keys = makeKeys();
    const token = await keys.token('viewer', 'bob', 600);
    const { jti, exp } = decodeJwt(token);
    const revokedFile = join(keys.dir, 'elsewhere.json');
    await run(process.execPath, [BIN, 'token', 'revoke', '--token', token, '--revocation-file', revokedFile]);
    const data = JSON.parse(readFileSync(revokedFile, 'utf8'));
    expect(data.revoked).toEqual([{ jti, exp, revokedAt: expect.any(Number) }]);
    const bad = await run(process.execPath, [BIN, 'token', 'revoke', '--revocation-file', revokedFile]).catch((e) => e);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/give the token id/);
  }, 60_000);

  it('drops entries whose token expired more than the clock skew ago when the file is rewritten', () => {
    const keys = makeKeys();
    const file = revocationFileFor(keys.keyFile);
    const now = 2_000_000_000;
    addRevocations(
      file,
      [{ jti: 'old', exp: now - 3600 }, { jti: 'recent', exp: now - 5 }, { jti: 'forever' }],
      now - 7200,
    );
    const kept = addRevocations(file, [{ jti: 'new', exp: now + 60 }], now);
    expect(kept.map((e) => e.jti).sort()).toEqual(['forever', 'new', 'recent']);
  });

  it('a missing file revokes nothing; a malformed file keeps the last good list and logs a warning', async () => {
    const keys = makeKeys();
    const file = revocationFileFor(keys.keyFile);
    const warnings: string[] = [];
    const log = pino(
      { level: 'warn' },
      {
        write: (line: string) => {
          warnings.push(line);
        },
      },
    );
    const revocations = list(file, 20, log);
    await revocations.start();
    expect(revocations.isRevoked('a')).toBe(false);
    expect(revocations.isRevoked(undefined)).toBe(false);
    addRevocations(file, [{ jti: 'a' }]);
    await waitFor(() => revocations.isRevoked('a'), 'jti a revoked');
    writeFileSync(file, '{"revoked": [ {"jti": ');
    await waitFor(() => warnings.some((w) => w.includes('keeping the last good list')), 'a warning');
    expect(revocations.isRevoked('a')).toBe(true);
    writeFileSync(file, '{"__proto__": {"revoked": []}}');
    await waitFor(() => warnings.length >= 2, 'a second warning');
    expect(revocations.isRevoked('a')).toBe(true);
  });
});
