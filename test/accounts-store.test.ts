// The accounts store on both databases it supports: SQLite (a file) and a real PostgreSQL (Debian's server,
// utils/history/postgres-cluster.ts). One contract, run twice; then what only migrations and hashes promise.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { PostgresDriver } from '../services/accounts/driver-postgres.ts';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { MIGRATIONS } from '../services/accounts/migrations.ts';
import { hashPassword, issueSecret, secretId, secretMatches, verifyPassword } from '../services/accounts/secrets.ts';
import { AccountsStore, SchemaTooNewError } from '../services/accounts/store.ts';
import { createDatabase, type PostgresCluster, startTestPostgres } from './helpers/postgres.ts';

let cluster: PostgresCluster;
const dirs: string[] = [];
beforeAll(async () => {
  cluster = await startTestPostgres();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function sqlitePath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-'));
  dirs.push(dir);
  return join(dir, 'history.db');
}

type Kind = 'sqlite' | 'postgres';
async function driverFor(kind: Kind, at?: string): Promise<{ store: AccountsStore; where: string }> {
  const where = at ?? (kind === 'sqlite' ? sqlitePath() : cluster.url(await createDatabase(cluster, 'accounts')));
  const driver = kind === 'sqlite' ? new SqliteDriver(where) : new PostgresDriver({ url: where });
  return { store: new AccountsStore(driver), where };
}

async function opened(kind: Kind, at?: string): Promise<AccountsStore> {
  const { store } = await driverFor(kind, at);
  onTestFinished(() => store.close());
  await store.open();
  return store;
}

describe.each(['sqlite', 'postgres'] as const)('accounts store on %s', (kind) => {
  it('applies every migration once, records them, and opens again without reapplying', async () => {
    const { store, where } = await driverFor(kind);
    await store.open();
    const all = MIGRATIONS.map((m) => m.version);
    expect(await store.appliedMigrations()).toEqual(all);
    await store.close();
    const again = await opened(kind, where);
    expect(await again.appliedMigrations()).toEqual(all);
  });

  // Two SQLite connections in one thread would wait on each other's lock synchronously (busy_timeout blocks the
  // thread that must commit); between processes BEGIN IMMEDIATE and the busy timeout make them take turns.
  it.skipIf(kind === 'sqlite')('two stores opening one new database at once migrate it once', async () => {
    const { where } = await driverFor(kind);
    const [a, b] = await Promise.all([opened(kind, where), opened(kind, where)]);
    expect(await a.appliedMigrations()).toEqual(MIGRATIONS.map((m) => m.version));
    expect(await b.appliedMigrations()).toEqual(MIGRATIONS.map((m) => m.version));
  });

  it('refuses a database migrated by a newer version', async () => {
    const { store, where } = await driverFor(kind);
    await store.open();
    await store.close();
    if (kind === 'sqlite') {
      const Database = (await import('better-sqlite3')).default;
      const db = new Database(where);
      db.prepare("INSERT INTO schema_migrations VALUES ('accounts', 999, 'future', 0)").run();
      db.close();
    } else {
      const c = new pg.Client({ connectionString: where });
      await c.connect();
      await c.query("INSERT INTO schema_migrations VALUES ('accounts', 999, 'future', 0)");
      await c.end();
    }
    const { store: later } = await driverFor(kind, where);
    onTestFinished(() => later.close());
    await expect(later.open()).rejects.toBeInstanceOf(SchemaTooNewError);
  });

  it('organisations, users and memberships', async () => {
    const store = await opened(kind);
    const a = await store.createOrg('lab-a');
    const b = await store.createOrg('lab-b');
    await expect(store.createOrg('lab-a')).rejects.toMatchObject({ name: 'ConflictError' });
    const alice = await store.createUser({ name: 'alice', passwordHash: '$argon2id$x' });
    await expect(store.createUser({ name: 'alice', passwordHash: 'y' })).rejects.toMatchObject({
      name: 'ConflictError',
    });
    await store.setMembership(alice.id, a.id, 'viewer');
    await store.setMembership(alice.id, b.id, 'operator');
    await store.setMembership(alice.id, a.id, 'admin');
    expect(await store.memberships(alice.id)).toEqual([
      { orgId: a.id, orgName: 'lab-a', role: 'admin' },
      { orgId: b.id, orgName: 'lab-b', role: 'operator' },
    ]);
    expect(await store.members(b.id)).toEqual([{ userId: alice.id, name: 'alice', role: 'operator' }]);
    expect(await store.setDisabled(alice.id, true)).toBe(true);
    expect((await store.userByName('alice'))?.disabled).toBe(true);
    expect(await store.setPassword(alice.id, 'new-hash')).toBe(true);
    expect((await store.userById(alice.id))?.passwordHash).toBe('new-hash');
    expect(await store.setDisabled('0000000000000000', true)).toBe(false);
    expect((await store.listOrgs()).map((o) => o.name)).toEqual(['lab-a', 'lab-b']);
    expect(await store.orgByName('__proto__')).toBeUndefined();
  });

  it('API keys: stored by hash, listed per organisation, revoked once, last use recorded', async () => {
    const store = await opened(kind);
    const a = await store.createOrg('a');
    const b = await store.createOrg('b');
    const secret = issueSecret('myk');
    const now = Date.now();
    await store.createApiKey({
      id: secret.id,
      hash: secret.hash,
      orgId: a.id,
      role: 'operator',
      nodeUid: null,
      label: 'script',
      createdAt: now,
      expiresAt: now + 60_000,
      createdBy: null,
    });
    const other = issueSecret('myk');
    await store.createApiKey({
      id: other.id,
      hash: other.hash,
      orgId: b.id,
      role: 'node',
      nodeUid: 'dev-1',
      label: '',
      createdAt: now,
      expiresAt: null,
      createdBy: null,
    });
    const row = await store.apiKey(secretId(secret.text, 'myk') ?? '');
    expect(row).toMatchObject({
      orgId: a.id,
      role: 'operator',
      revoked: false,
      lastUsedAt: null,
      expiresAt: now + 60_000,
    });
    expect(row?.hash).not.toContain(secret.text.slice(21));
    expect(secretMatches(secret.text, row?.hash ?? '')).toBe(true);
    expect(secretMatches(other.text, row?.hash ?? '')).toBe(false);
    expect((await store.listApiKeys(a.id)).map((k) => k.id)).toEqual([secret.id]);
    expect(await store.listApiKeys()).toHaveLength(2);
    await store.touchApiKey(secret.id, now + 5);
    expect((await store.apiKey(secret.id))?.lastUsedAt).toBe(now + 5);
    expect(await store.revokeApiKey(secret.id)).toBe(true);
    expect(await store.revokeApiKey(secret.id)).toBe(false);
    expect((await store.apiKey(secret.id))?.revoked).toBe(true);
  });

  it('a PIN is claimed once and delivered exactly once, even to polls racing each other', async () => {
    const store = await opened(kind);
    const org = await store.createOrg('a');
    const now = Date.now();
    expect(await store.createPin('123456', now, now + 600_000)).toBe(true);
    expect(await store.createPin('123456', now, now + 600_000)).toBe(false);
    expect(await store.deliverPin('123456', now)).toBe(false); // not claimed yet
    const claim = { orgId: org.id, nodeUid: 'dev-1', keyId: 'aaaaaaaaaaaaaaaa' };
    const claims = await Promise.all([store.claimPin('123456', claim, now), store.claimPin('123456', claim, now)]);
    expect(claims.filter(Boolean)).toHaveLength(1);
    const polls = await Promise.all(Array.from({ length: 5 }, () => store.deliverPin('123456', now + 1)));
    expect(polls.filter(Boolean)).toHaveLength(1);
    expect(await store.pin('123456')).toMatchObject({ nodeUid: 'dev-1', deliveredAt: now + 1 });
    // Expired PINs can be neither claimed nor delivered, and are pruned.
    expect(await store.createPin('000001', now - 700_000, now - 100_000)).toBe(true);
    expect(await store.claimPin('000001', claim, now)).toBe(false);
    expect(await store.prunePins(now)).toBe(1);
    expect(await store.pin('000001')).toBeUndefined();
  });

  it('refresh sessions and invitations', async () => {
    const store = await opened(kind);
    const org = await store.createOrg('a');
    const user = await store.createUser({ name: 'bob', passwordHash: 'h' });
    const now = Date.now();
    const r1 = issueSecret('myr');
    const r2 = issueSecret('myr');
    for (const r of [r1, r2]) {
      await store.createRefresh({
        id: r.id,
        hash: r.hash,
        userId: user.id,
        orgId: org.id,
        createdAt: now,
        expiresAt: now + 1000,
      });
    }
    expect(await store.revokeRefresh(r1.id)).toBe(true);
    expect(await store.revokeRefreshOfUser(user.id)).toBe(1);
    expect((await store.refresh(r2.id))?.revoked).toBe(true);
    const inv = issueSecret('myi');
    await store.createInvitation({
      id: inv.id,
      hash: inv.hash,
      orgId: org.id,
      email: 'x@example.org',
      role: 'viewer',
      createdAt: now,
      expiresAt: now + 1000,
    });
    expect((await store.listInvitations(org.id)).map((i) => i.email)).toEqual(['x@example.org']);
    const accepted = await Promise.all([store.acceptInvitation(inv.id, now), store.acceptInvitation(inv.id, now)]);
    expect(accepted.filter(Boolean)).toHaveLength(1);
  });

  it('stores only hashes: neither a password nor a key appears in the database', async () => {
    const store = await opened(kind);
    const password = 'correct horse battery staple';
    const user = await store.createUser({ name: 'carol', passwordHash: await hashPassword(password) });
    const org = await store.createOrg('c');
    const key = issueSecret('myk');
    await store.createApiKey({
      id: key.id,
      hash: key.hash,
      orgId: org.id,
      role: 'viewer',
      nodeUid: null,
      label: '',
      createdAt: Date.now(),
      expiresAt: null,
      createdBy: user.id,
    });
    const stored = await store.userById(user.id);
    expect(stored?.passwordHash.startsWith('$argon2id$')).toBe(true);
    expect(await verifyPassword(stored?.passwordHash, password)).toBe(true);
    expect(await verifyPassword(stored?.passwordHash, 'wrong password')).toBe(false);
    expect(await verifyPassword(undefined, password)).toBe(false);
    if (kind === 'sqlite') {
      await store.close();
      const where = (store as unknown as { db: { path: string } }).db.path;
      for (const file of [where, `${where}-wal`]) {
        let bytes: Buffer;
        try {
          bytes = readFileSync(file);
        } catch {
          continue;
        }
        expect(bytes.includes(password)).toBe(false);
        expect(bytes.includes(key.text.slice(21))).toBe(false);
      }
    }
  });
});
