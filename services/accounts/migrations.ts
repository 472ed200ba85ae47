// The accounts schema as numbered migrations, applied in order at start and recorded in `schema_migrations`
// (component, version): the table is keyed by component so the history service (or anything else sharing the
// database) can record its own versions in it later without a clash. A migration is never edited once released;
// a change is a new, higher version. Each has its SQLite and PostgreSQL text: the two differ only in column types
// (SQLite's INTEGER is 64-bit; PostgreSQL needs bigint for epoch milliseconds).
//
// Tables are prefixed `accounts_` because they share the database with the history tables (`--db`/`--pg-url`).

export interface Migration {
  version: number;
  name: string;
  sqlite: string;
  postgres: string;
}

/** `$T` is the time type of each dialect; the rest of the text is the same SQL. */
function both(version: number, name: string, sql: string): Migration {
  return { version, name, sqlite: sql.replaceAll('$T', 'INTEGER'), postgres: sql.replaceAll('$T', 'bigint') };
}

export const MIGRATIONS: readonly Migration[] = [
  both(
    1,
    'users, organisations, memberships, API keys, refresh sessions',
    `
CREATE TABLE accounts_orgs (
  id text PRIMARY KEY,
  name text NOT NULL UNIQUE,
  created_at $T NOT NULL
);
CREATE TABLE accounts_users (
  id text PRIMARY KEY,
  name text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  system_admin integer NOT NULL DEFAULT 0,
  disabled integer NOT NULL DEFAULT 0,
  created_at $T NOT NULL
);
CREATE TABLE accounts_memberships (
  user_id text NOT NULL REFERENCES accounts_users(id) ON DELETE CASCADE,
  org_id text NOT NULL REFERENCES accounts_orgs(id) ON DELETE CASCADE,
  role text NOT NULL,
  PRIMARY KEY (user_id, org_id)
);
CREATE TABLE accounts_api_keys (
  id text PRIMARY KEY,
  hash text NOT NULL UNIQUE,
  org_id text NOT NULL REFERENCES accounts_orgs(id) ON DELETE CASCADE,
  role text NOT NULL,
  node_uid text,
  label text NOT NULL DEFAULT '',
  created_at $T NOT NULL,
  expires_at $T,
  last_used_at $T,
  revoked integer NOT NULL DEFAULT 0,
  created_by text
);
CREATE INDEX accounts_api_keys_org ON accounts_api_keys (org_id);
CREATE TABLE accounts_refresh (
  id text PRIMARY KEY,
  hash text NOT NULL UNIQUE,
  user_id text NOT NULL REFERENCES accounts_users(id) ON DELETE CASCADE,
  org_id text,
  created_at $T NOT NULL,
  expires_at $T NOT NULL,
  revoked integer NOT NULL DEFAULT 0
);
CREATE INDEX accounts_refresh_user ON accounts_refresh (user_id);
`,
  ),
  both(
    2,
    'provisioning PINs and invitations',
    `
CREATE TABLE accounts_pins (
  pin text PRIMARY KEY,
  created_at $T NOT NULL,
  expires_at $T NOT NULL,
  org_id text,
  node_uid text,
  key_id text,
  delivered_at $T
);
CREATE TABLE accounts_invitations (
  id text PRIMARY KEY,
  hash text NOT NULL UNIQUE,
  org_id text NOT NULL REFERENCES accounts_orgs(id) ON DELETE CASCADE,
  email text NOT NULL,
  role text NOT NULL,
  created_at $T NOT NULL,
  expires_at $T NOT NULL,
  accepted_at $T
);
`,
  ),
  both(
    3,
    'a PIN is polled with the secret its device was given (a guessed PIN alone never receives the key)',
    `ALTER TABLE accounts_pins ADD COLUMN poll_hash text NOT NULL DEFAULT '';`,
  ),
];

export const MIGRATIONS_TABLE_SQL = `CREATE TABLE IF NOT EXISTS schema_migrations (
  component text NOT NULL,
  version integer NOT NULL,
  name text NOT NULL,
  applied_at bigint NOT NULL,
  PRIMARY KEY (component, version)
)`;

export const COMPONENT = 'accounts';
