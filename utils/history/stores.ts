// Opening each history store on a throwaway database, for the contract test and `npm run bench:history`.
// SQLite's store (services/history/store-sqlite.ts) is built on another branch; until it is merged, loadSqlite()
// says so and the callers skip that half. It is loaded by a computed path so that neither tsc nor
// dependency-cruiser needs the file to exist.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { PostgresHistoryStore, type PostgresStoreOptions } from '../../services/history/store-postgres.ts';
import type { HistoryStore } from '../../services/history/store.ts';
import type { PostgresCluster } from './postgres-cluster.ts';

const SQLITE_MODULE = new URL('../../services/history/store-sqlite.ts', import.meta.url);

/** Opens a SQLite store on a file in `dir`. */
export type SqliteFactory = (dir: string) => HistoryStore;

/**
 * The SQLite store's constructor, or the reason it cannot be had. The adapter takes the module's exported class
 * whose prototype has the HistoryStore methods and calls it with `{ path }`, the shape the interface's author
 * asked for; if store-sqlite.ts chose another shape, this is the one place to adjust.
 */
export async function loadSqlite(): Promise<SqliteFactory | string> {
  if (!existsSync(SQLITE_MODULE)) return 'services/history/store-sqlite.ts is not on this branch yet (H3a builds it)';
  const mod = (await import(SQLITE_MODULE.href)) as Record<string, unknown>;
  for (const exported of Object.values(mod)) {
    if (typeof exported !== 'function') continue;
    const proto = (exported as { prototype?: Record<string, unknown> }).prototype;
    if (proto !== undefined && typeof proto.insert === 'function' && typeof proto.query === 'function') {
      const Store = exported as new (options: { path: string }) => HistoryStore;
      return (dir) => new Store({ path: join(dir, 'history.db') });
    }
  }
  return `store-sqlite.ts exports no class with insert() and query() (exports: ${Object.keys(mod).join(', ')})`;
}

let databases = 0;

/** A new, empty database in the cluster (CREATE DATABASE copies template1: tens of milliseconds). */
export async function createDatabase(cluster: PostgresCluster, prefix = 'history'): Promise<string> {
  const name = `${prefix}_${process.pid}_${++databases}`;
  const admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return name;
}

/** A PostgreSQL store on a new database of the cluster, not yet opened. */
export async function postgresStoreOn(
  cluster: PostgresCluster,
  options: Omit<PostgresStoreOptions, 'url'> = {},
): Promise<PostgresHistoryStore> {
  const database = await createDatabase(cluster);
  return new PostgresHistoryStore({ ...options, url: cluster.url(database) });
}
