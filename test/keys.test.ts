// Key files through the real `mycelium` command: permissions as ssh checks them, atomic replacement that never
// follows a symlink, and brokers that verify with the public key alone.
import { execFile } from 'node:child_process';
import { chmodSync, lstatSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { readPrivateKey } from '../services/common/keys.ts';
import { type BrokerProcess, spawnBroker } from './helpers/broker-process.ts';
import { makeKeys } from './helpers/keys.ts';
import { TestPeer } from './helpers/ws-client.ts';

const run = promisify(execFile);
const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;

function mycelium(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [BIN, ...args]).then(
    (r) => ({ code: 0, ...r }),
    (e) => ({ code: e.code as number, stdout: e.stdout as string, stderr: e.stderr as string }),
  );
}

const brokers: BrokerProcess[] = [];
afterEach(async () => {
  for (const b of brokers.splice(0)) await b.stop();
});

describe('mycelium keys and key files', () => {
  it('refuses a private key that group or others can read: permissions 0644 for the file are too open', async () => {
    const keys = makeKeys();
    chmodSync(keys.keyFile, 0o644);
    const token = await mycelium(['token', '--role', 'admin', '--sub', 'me', '--key-file', keys.keyFile]);
    expect(token.code).toBe(2);
    expect(token.stdout).toBe('');
    expect(token.stderr).toContain(`permissions 0644 for '${keys.keyFile}' are too open`);
    expect(token.stderr).toContain('chmod 600');
    // Group-readable is refused too (checked in-process: the same function the CLI calls).
    chmodSync(keys.keyFile, 0o640);
    expect(() => readPrivateKey(keys.keyFile)).toThrow(/permissions 0640 .* are too open/);
    // A broker handed the private key checks it too, though it only needs the public half.
    await expect(spawnBroker('perm', keys.keyFile)).rejects.toThrow(/exited with 2/);
    chmodSync(keys.keyFile, 0o600);
    expect(() => readPrivateKey(keys.keyFile)).not.toThrow();
  }, 60_000);

  it('keys --force never writes through a symlink: the file it points to is untouched', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'myc-keys-'));
    const elsewhere = join(dir, 'precious.txt');
    writeFileSync(elsewhere, 'do not overwrite\n');
    const keyFile = join(dir, 'key.pem');
    symlinkSync(elsewhere, keyFile);
    const res = await mycelium(['keys', '--force', '--key-file', keyFile]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/symbolic link/);
    expect(readFileSync(elsewhere, 'utf8')).toBe('do not overwrite\n');
    expect(lstatSync(keyFile).isSymbolicLink()).toBe(true);
    // The same for the public key path.
    const other = join(dir, 'other.pem');
    symlinkSync(elsewhere, join(dir, 'other.pub.pem'));
    const pub = await mycelium(['keys', '--force', '--key-file', other]);
    expect(pub.code).toBe(2);
    expect(readFileSync(elsewhere, 'utf8')).toBe('do not overwrite\n');
  }, 60_000);

  it('keys --force replaces the key by renaming a new file into place (new inode, 0600 even if the old was not)', async () => {
    const keys = makeKeys();
    chmodSync(keys.keyFile, 0o644);
    const before = statSync(keys.keyFile);
    const oldPem = readFileSync(keys.keyFile, 'utf8');
    const res = await mycelium(['keys', '--force', '--key-file', keys.keyFile]);
    expect(res.code).toBe(0);
    const after = statSync(keys.keyFile);
    expect(after.ino).not.toBe(before.ino);
    expect(after.mode & 0o777).toBe(0o600);
    expect(readFileSync(keys.keyFile, 'utf8')).not.toBe(oldPem);
  }, 60_000);

  it('a broker started with --public-key-file alone verifies tokens, and refuses a private key given there', async () => {
    const keys = makeKeys();
    const pubDir = mkdtempSync(join(tmpdir(), 'myc-pub-'));
    const pubFile = join(pubDir, 'key.pub.pem');
    writeFileSync(pubFile, readFileSync(`${keys.dir}/key.pub.pem`));
    const broker = await spawnBroker('pub-only', join(pubDir, 'no-such-key.pem'), ['--public-key-file', pubFile]);
    brokers.push(broker);
    const peer = await TestPeer.connect(`${broker.ws}/ws`, await keys.token('viewer'));
    peer.ws.terminate();
    const other = makeKeys();
    const refused = await TestPeer.connect(`${broker.ws}/ws`, await other.token('viewer')).catch(
      (e: { status?: number }) => e,
    );
    expect(refused).toMatchObject({ status: 401 });
    await expect(spawnBroker('priv-as-pub', pubFile, ['--public-key-file', keys.keyFile])).rejects.toThrow(
      /exited with 2/,
    );
  }, 60_000);

  it('keys --public-key-file puts the public key elsewhere; --if-missing writes a missing one from the private key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'myc-keys-'));
    const keyFile = join(dir, 'private', 'key.pem');
    const pubFile = join(dir, 'public', 'key.pub.pem');
    expect((await mycelium(['keys', '--key-file', keyFile, '--public-key-file', pubFile])).code).toBe(0);
    const pem = readFileSync(pubFile, 'utf8');
    expect(pem).toContain('PUBLIC KEY');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const pub2 = join(dir, 'public2', 'key.pub.pem');
    const res = await mycelium(['keys', '--key-file', keyFile, '--public-key-file', pub2, '--if-missing']);
    expect(res.code).toBe(0);
    expect(readFileSync(pub2, 'utf8')).toBe(pem);
  }, 60_000);
});
