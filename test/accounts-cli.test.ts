// `mycelium org|user|key` through the real command on a real SQLite file: passwords from stdin only, the key
// alone on stdout, clear refusals, and nothing secret in what the command prints besides the key itself.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { secretMatches, verifyPassword } from '../services/accounts/secrets.ts';
import { AccountsStore } from '../services/accounts/store.ts';

const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;
const home = mkdtempSync(join(tmpdir(), 'myc-accounts-cli-'));
const dbFile = join(home, 'history.db');
afterAll(() => rmSync(home, { recursive: true, force: true }));

/** Runs `mycelium …` with MYCELIUM_HOME in the temporary directory, feeding `input` on stdin. */
function mycelium(args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, MYCELIUM_HOME: home, MYCELIUM_DB: `sqlite:${dbFile}` },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input);
  });
}

async function withStore<T>(fn: (s: AccountsStore) => Promise<T>): Promise<T> {
  const store = new AccountsStore(new SqliteDriver(dbFile));
  await store.open();
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const PASSWORD = 'a long enough password';

// Each command is a process started through tsx: seconds each on a loaded machine.
describe('mycelium org, user and key', { timeout: 180_000 }, () => {
  it('creates an organisation and a user whose password is read from stdin and stored as argon2id', async () => {
    expect((await mycelium(['org', 'create', 'lab-a'])).code).toBe(0);
    const again = await mycelium(['org', 'create', 'lab-a']);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/exists already/);
    const add = await mycelium(['user', 'add', 'alice', '--org', 'lab-a', '--role', 'operator'], `${PASSWORD}\n`);
    expect(add.code).toBe(0);
    expect(add.stdout + add.stderr).not.toContain(PASSWORD);
    const alice = await withStore((s) => s.userByName('alice'));
    expect(alice?.passwordHash.startsWith('$argon2id$')).toBe(true);
    expect(await verifyPassword(alice?.passwordHash, PASSWORD)).toBe(true);
    expect(readFileSync(dbFile).includes(PASSWORD)).toBe(false);
    expect((await mycelium(['user', 'list'])).stdout).toContain('alice  lab-a:operator');
  });

  it('has no password flag, and refuses a short password or an unknown role', async () => {
    const flag = await mycelium(['user', 'add', 'bob', '--org', 'lab-a', '--password', PASSWORD]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/password/);
    const short = await mycelium(['user', 'add', 'bob', '--org', 'lab-a'], 'short\n');
    expect(short.stderr).toMatch(/at least 8/);
    const role = await mycelium(['user', 'add', 'bob', '--org', 'lab-a', '--role', 'root'], `${PASSWORD}\n`);
    expect(role.stderr).toMatch(/role must be/);
    const proto = await mycelium(['user', 'add', '__proto__', '--org', 'lab-a'], `${PASSWORD}\n`);
    expect(proto.code).toBe(2);
    expect(await withStore((s) => s.userByName('bob'))).toBeUndefined();
  });

  it('passwd changes the hash, disable marks the user', async () => {
    const before = await withStore((s) => s.userByName('alice'));
    expect((await mycelium(['user', 'passwd', 'alice'], 'another long password\n')).code).toBe(0);
    expect((await mycelium(['user', 'disable', 'alice'])).code).toBe(0);
    const after = await withStore((s) => s.userByName('alice'));
    expect(after?.passwordHash).not.toBe(before?.passwordHash);
    expect(await verifyPassword(after?.passwordHash, 'another long password')).toBe(true);
    expect(after?.disabled).toBe(true);
    expect((await mycelium(['user', 'passwd', 'nobody'], `${PASSWORD}\n`)).stderr).toMatch(/no user/);
  });

  it('key create prints the key alone on stdout; list shows it without the secret; revoke marks it', async () => {
    const created = await mycelium(['key', 'create', '--org', 'lab-a', '--role', 'viewer', '--ttl', '30d']);
    expect(created.code).toBe(0);
    const text = created.stdout.trim();
    expect(text).toMatch(/^myk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(created.stdout).toBe(`${text}\n`);
    const id = text.slice(4, 20);
    const row = await withStore((s) => s.apiKey(id));
    expect(row).toMatchObject({ role: 'viewer', revoked: false });
    expect(secretMatches(text, row?.hash ?? '')).toBe(true);
    expect(readFileSync(dbFile).includes(text.slice(21))).toBe(false);
    const list = await mycelium(['key', 'list', '--org', 'lab-a']);
    expect(list.stdout).toContain(`${id}  lab-a  viewer  active  never used`);
    expect(list.stdout).not.toContain(text.slice(21));
    const device = await mycelium(['key', 'create', '--org', 'lab-a', '--node', 'dev-1']);
    expect(device.code).toBe(0);
    expect((await mycelium(['key', 'list'])).stdout).toContain('node:dev-1');
    expect((await mycelium(['key', 'revoke', id])).code).toBe(0);
    expect((await withStore((s) => s.apiKey(id)))?.revoked).toBe(true);
    expect((await mycelium(['key', 'revoke', id])).stderr).toMatch(/no active key/);
    expect((await mycelium(['key', 'list'])).stdout).toContain(`${id}  lab-a  viewer  revoked`);
  });

  it('refuses a key for an unknown organisation, a bad role, a bad ttl or a bad node uid', async () => {
    expect((await mycelium(['key', 'create', '--org', 'nope', '--role', 'viewer'])).stderr).toMatch(/no organisation/);
    expect((await mycelium(['key', 'create', '--org', 'lab-a', '--role', 'gateway'])).stderr).toMatch(/role must/);
    expect((await mycelium(['key', 'create', '--org', 'lab-a', '--role', 'viewer', '--ttl', 'x'])).stderr).toMatch(
      /--ttl/,
    );
    const node = await mycelium(['key', 'create', '--org', 'lab-a', '--node', 'a\u0001b']);
    expect(node.code).toBe(2);
    expect(node.stdout).toBe('');
  });
});
