// The accounts store: organisations, users, memberships, API keys, refresh sessions, PINs and invitations, on
// either database through a SqlDriver (sql.ts). Secrets never reach it: it stores argon2id hashes of passwords
// and SHA-256 hashes of keys and refresh credentials (see secrets.ts for why SHA-256 is enough for those).
import { randomBytes } from 'node:crypto';
import { COMPONENT, MIGRATIONS, MIGRATIONS_TABLE_SQL } from './migrations.ts';
import type { ApiKey, Invitation, Membership, Org, OrgRole, Pin, RefreshSession, User } from './records.ts';
import type { Row, SqlDriver } from './sql.ts';

/** A random row id: 16 hex characters (64 bits), fixed length so it can sit inside a key's text. */
export function newId(): string {
  return randomBytes(8).toString('hex');
}

/** The database was migrated by a newer Mycelium: refuse rather than write rows it does not understand. */
export class SchemaTooNewError extends Error {
  override name = 'SchemaTooNewError';
}

const str = (v: unknown): string => String(v);
const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const bool = (v: unknown): boolean => Number(v) !== 0;

function toOrg(r: Row): Org {
  return { id: str(r.id), name: str(r.name), createdAt: num(r.created_at) };
}

function toUser(r: Row): User {
  return {
    id: str(r.id),
    name: str(r.name),
    passwordHash: str(r.password_hash),
    systemAdmin: bool(r.system_admin),
    disabled: bool(r.disabled),
    createdAt: num(r.created_at),
  };
}

function toKey(r: Row): ApiKey {
  return {
    id: str(r.id),
    hash: str(r.hash),
    orgId: str(r.org_id),
    role: str(r.role) as ApiKey['role'],
    nodeUid: strOrNull(r.node_uid),
    label: str(r.label),
    createdAt: num(r.created_at),
    expiresAt: numOrNull(r.expires_at),
    lastUsedAt: numOrNull(r.last_used_at),
    revoked: bool(r.revoked),
    createdBy: strOrNull(r.created_by),
  };
}

function toRefresh(r: Row): RefreshSession {
  return {
    id: str(r.id),
    hash: str(r.hash),
    userId: str(r.user_id),
    orgId: strOrNull(r.org_id),
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
    revoked: bool(r.revoked),
  };
}

function toPin(r: Row): Pin {
  return {
    pin: str(r.pin),
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
    orgId: strOrNull(r.org_id),
    nodeUid: strOrNull(r.node_uid),
    keyId: strOrNull(r.key_id),
    pollHash: str(r.poll_hash),
    deliveredAt: numOrNull(r.delivered_at),
  };
}

function toInvitation(r: Row): Invitation {
  return {
    id: str(r.id),
    hash: str(r.hash),
    orgId: str(r.org_id),
    email: str(r.email),
    role: str(r.role) as OrgRole,
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
    acceptedAt: numOrNull(r.accepted_at),
  };
}

const first = <T>(rows: Row[], map: (r: Row) => T): T | undefined => (rows.length > 0 ? map(rows[0]) : undefined);

export class AccountsStore {
  constructor(private readonly db: SqlDriver) {}

  get kind(): SqlDriver['kind'] {
    return this.db.kind;
  }

  /** Opens the database and applies every migration it has not had, in one transaction. */
  async open(): Promise<void> {
    await this.db.open();
    await this.migrate();
  }

  close(): Promise<void> {
    return this.db.close();
  }

  /** The versions applied, oldest first. */
  async appliedMigrations(): Promise<number[]> {
    const rows = await this.db.all('SELECT version FROM schema_migrations WHERE component = ? ORDER BY version', [
      COMPONENT,
    ]);
    return rows.map((r) => num(r.version));
  }

  private async migrate(): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.script(MIGRATIONS_TABLE_SQL);
      const rows = await tx.all('SELECT version FROM schema_migrations WHERE component = ?', [COMPONENT]);
      const done = new Set(rows.map((r) => num(r.version)));
      const newest = Math.max(0, ...done);
      const known = MIGRATIONS[MIGRATIONS.length - 1].version;
      if (newest > known) {
        throw new SchemaTooNewError(
          `the accounts schema is at version ${newest}, this Mycelium knows up to ${known}: upgrade Mycelium`,
        );
      }
      for (const m of MIGRATIONS) {
        if (done.has(m.version)) continue;
        await tx.script(this.db.kind === 'sqlite' ? m.sqlite : m.postgres);
        await tx.run('INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)', [
          COMPONENT,
          m.version,
          m.name,
          Date.now(),
        ]);
      }
    });
  }

  // Organisations

  async createOrg(name: string): Promise<Org> {
    const org = { id: newId(), name, createdAt: Date.now() };
    await this.db.run('INSERT INTO accounts_orgs (id, name, created_at) VALUES (?, ?, ?)', [
      org.id,
      org.name,
      org.createdAt,
    ]);
    return org;
  }

  async orgByName(name: string): Promise<Org | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_orgs WHERE name = ?', [name]), toOrg);
  }

  async orgById(id: string): Promise<Org | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_orgs WHERE id = ?', [id]), toOrg);
  }

  async listOrgs(): Promise<Org[]> {
    return (await this.db.all('SELECT * FROM accounts_orgs ORDER BY name')).map(toOrg);
  }

  // Users and memberships

  async createUser(input: { name: string; passwordHash: string; systemAdmin?: boolean }): Promise<User> {
    const user: User = {
      id: newId(),
      name: input.name,
      passwordHash: input.passwordHash,
      systemAdmin: input.systemAdmin === true,
      disabled: false,
      createdAt: Date.now(),
    };
    await this.db.run(
      'INSERT INTO accounts_users (id, name, password_hash, system_admin, disabled, created_at) VALUES (?, ?, ?, ?, 0, ?)',
      [user.id, user.name, user.passwordHash, user.systemAdmin ? 1 : 0, user.createdAt],
    );
    return user;
  }

  async userByName(name: string): Promise<User | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_users WHERE name = ?', [name]), toUser);
  }

  async userById(id: string): Promise<User | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_users WHERE id = ?', [id]), toUser);
  }

  async listUsers(): Promise<User[]> {
    return (await this.db.all('SELECT * FROM accounts_users ORDER BY name')).map(toUser);
  }

  async setPassword(userId: string, passwordHash: string): Promise<boolean> {
    return (await this.db.run('UPDATE accounts_users SET password_hash = ? WHERE id = ?', [passwordHash, userId])) > 0;
  }

  async setDisabled(userId: string, disabled: boolean): Promise<boolean> {
    return (await this.db.run('UPDATE accounts_users SET disabled = ? WHERE id = ?', [disabled ? 1 : 0, userId])) > 0;
  }

  async setSystemAdmin(userId: string, admin: boolean): Promise<boolean> {
    return (await this.db.run('UPDATE accounts_users SET system_admin = ? WHERE id = ?', [admin ? 1 : 0, userId])) > 0;
  }

  /** Gives the user `role` in the organisation, replacing the role they had there. */
  async setMembership(userId: string, orgId: string, role: OrgRole): Promise<void> {
    await this.db.run(
      `INSERT INTO accounts_memberships (user_id, org_id, role) VALUES (?, ?, ?)
       ON CONFLICT (user_id, org_id) DO UPDATE SET role = excluded.role`,
      [userId, orgId, role],
    );
  }

  async removeMembership(userId: string, orgId: string): Promise<boolean> {
    return (
      (await this.db.run('DELETE FROM accounts_memberships WHERE user_id = ? AND org_id = ?', [userId, orgId])) > 0
    );
  }

  async memberships(userId: string): Promise<Membership[]> {
    const rows = await this.db.all(
      `SELECT m.org_id, o.name, m.role FROM accounts_memberships m JOIN accounts_orgs o ON o.id = m.org_id
       WHERE m.user_id = ? ORDER BY o.name`,
      [userId],
    );
    return rows.map((r) => ({ orgId: str(r.org_id), orgName: str(r.name), role: str(r.role) as OrgRole }));
  }

  async members(orgId: string): Promise<Array<{ userId: string; name: string; role: OrgRole }>> {
    const rows = await this.db.all(
      `SELECT u.id, u.name, m.role FROM accounts_memberships m JOIN accounts_users u ON u.id = m.user_id
       WHERE m.org_id = ? ORDER BY u.name`,
      [orgId],
    );
    return rows.map((r) => ({ userId: str(r.id), name: str(r.name), role: str(r.role) as OrgRole }));
  }

  // API keys

  async createApiKey(key: Omit<ApiKey, 'lastUsedAt' | 'revoked'>): Promise<ApiKey> {
    await this.db.run(
      `INSERT INTO accounts_api_keys (id, hash, org_id, role, node_uid, label, created_at, expires_at, created_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [key.id, key.hash, key.orgId, key.role, key.nodeUid, key.label, key.createdAt, key.expiresAt, key.createdBy],
    );
    return { ...key, lastUsedAt: null, revoked: false };
  }

  async apiKey(id: string): Promise<ApiKey | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_api_keys WHERE id = ?', [id]), toKey);
  }

  /** Every key, or one organisation's; newest first. */
  async listApiKeys(orgId?: string): Promise<ApiKey[]> {
    const rows =
      orgId === undefined
        ? await this.db.all('SELECT * FROM accounts_api_keys ORDER BY created_at DESC, id')
        : await this.db.all('SELECT * FROM accounts_api_keys WHERE org_id = ? ORDER BY created_at DESC, id', [orgId]);
    return rows.map(toKey);
  }

  async revokeApiKey(id: string): Promise<boolean> {
    return (await this.db.run('UPDATE accounts_api_keys SET revoked = 1 WHERE id = ? AND revoked = 0', [id])) > 0;
  }

  async touchApiKey(id: string, at: number): Promise<void> {
    await this.db.run('UPDATE accounts_api_keys SET last_used_at = ? WHERE id = ?', [at, id]);
  }

  /** Ids of revoked keys that have not expired yet (what verifiers must refuse though they cached them). */
  async revokedKeyIds(now: number): Promise<string[]> {
    const rows = await this.db.all(
      'SELECT id FROM accounts_api_keys WHERE revoked = 1 AND (expires_at IS NULL OR expires_at > ?) ORDER BY id',
      [now],
    );
    return rows.map((r) => str(r.id));
  }

  async disabledUserIds(): Promise<string[]> {
    return (await this.db.all('SELECT id FROM accounts_users WHERE disabled = 1 ORDER BY id')).map((r) => str(r.id));
  }

  // Refresh sessions

  async createRefresh(session: Omit<RefreshSession, 'revoked'>): Promise<RefreshSession> {
    await this.db.run(
      'INSERT INTO accounts_refresh (id, hash, user_id, org_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)',
      [session.id, session.hash, session.userId, session.orgId, session.createdAt, session.expiresAt],
    );
    return { ...session, revoked: false };
  }

  async refresh(id: string): Promise<RefreshSession | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_refresh WHERE id = ?', [id]), toRefresh);
  }

  async revokeRefresh(id: string): Promise<boolean> {
    return (await this.db.run('UPDATE accounts_refresh SET revoked = 1 WHERE id = ? AND revoked = 0', [id])) > 0;
  }

  async revokeRefreshOfUser(userId: string): Promise<number> {
    return this.db.run('UPDATE accounts_refresh SET revoked = 1 WHERE user_id = ? AND revoked = 0', [userId]);
  }

  // PINs

  /** False when the PIN is taken (the caller draws another). */
  async createPin(pin: string, createdAt: number, expiresAt: number, pollHash = ''): Promise<boolean> {
    try {
      await this.db.run('INSERT INTO accounts_pins (pin, created_at, expires_at, poll_hash) VALUES (?, ?, ?, ?)', [
        pin,
        createdAt,
        expiresAt,
        pollHash,
      ]);
      return true;
    } catch (err) {
      if ((err as Error).name === 'ConflictError') return false;
      throw err;
    }
  }

  async pin(pin: string): Promise<Pin | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_pins WHERE pin = ?', [pin]), toPin);
  }

  /** Binds an unclaimed, unexpired PIN to a key; false if someone claimed it first or it expired. */
  async claimPin(pin: string, claim: { orgId: string; nodeUid: string; keyId: string }, now: number): Promise<boolean> {
    const changed = await this.db.run(
      `UPDATE accounts_pins SET org_id = ?, node_uid = ?, key_id = ?
       WHERE pin = ? AND key_id IS NULL AND expires_at > ?`,
      [claim.orgId, claim.nodeUid, claim.keyId, pin, now],
    );
    return changed > 0;
  }

  /** Marks a claimed PIN delivered; true for exactly one caller, which then hands the key to the device. */
  async deliverPin(pin: string, now: number): Promise<boolean> {
    const changed = await this.db.run(
      `UPDATE accounts_pins SET delivered_at = ?
       WHERE pin = ? AND key_id IS NOT NULL AND delivered_at IS NULL AND expires_at > ?`,
      [now, pin, now],
    );
    return changed > 0;
  }

  /** Deletes PINs that expired before `now`; returns how many. */
  async prunePins(now: number): Promise<number> {
    return this.db.run('DELETE FROM accounts_pins WHERE expires_at <= ?', [now]);
  }

  // Invitations

  async createInvitation(inv: Omit<Invitation, 'acceptedAt'>): Promise<Invitation> {
    await this.db.run(
      `INSERT INTO accounts_invitations (id, hash, org_id, email, role, created_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
      [inv.id, inv.hash, inv.orgId, inv.email, inv.role, inv.createdAt, inv.expiresAt],
    );
    return { ...inv, acceptedAt: null };
  }

  async invitation(id: string): Promise<Invitation | undefined> {
    return first(await this.db.all('SELECT * FROM accounts_invitations WHERE id = ?', [id]), toInvitation);
  }

  async listInvitations(orgId: string): Promise<Invitation[]> {
    const rows = await this.db.all('SELECT * FROM accounts_invitations WHERE org_id = ? ORDER BY created_at DESC', [
      orgId,
    ]);
    return rows.map(toInvitation);
  }

  /** An invitation whose mail was not sent: gone, so it cannot be accepted. */
  async deleteInvitation(id: string): Promise<boolean> {
    return (await this.db.run('DELETE FROM accounts_invitations WHERE id = ?', [id])) > 0;
  }

  /** True for exactly one caller, and only while the invitation is open. */
  async acceptInvitation(id: string, now: number): Promise<boolean> {
    const changed = await this.db.run(
      'UPDATE accounts_invitations SET accepted_at = ? WHERE id = ? AND accepted_at IS NULL AND expires_at > ?',
      [now, id, now],
    );
    return changed > 0;
  }
}
