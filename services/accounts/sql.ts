// The little the accounts store needs from a database, so one store (store.ts) runs on SQLite and PostgreSQL:
// statements with `?` placeholders (the PostgreSQL driver numbers them), rows as plain objects, one transaction
// on one connection, and one error for "that unique value exists already".

export type SqlValue = string | number | null;
export type Row = Record<string, unknown>;

export interface SqlExec {
  all(sql: string, params?: readonly SqlValue[]): Promise<Row[]>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
  /** Several statements without parameters (a migration). */
  script(sql: string): Promise<void>;
}

export interface SqlDriver extends SqlExec {
  readonly kind: 'sqlite' | 'postgres';
  open(): Promise<void>;
  close(): Promise<void>;
  /**
   * Runs `fn` in one transaction that holds the database's write lock from the start (SQLite BEGIN IMMEDIATE,
   * PostgreSQL a transaction-scoped advisory lock), so two processes migrating one database take turns.
   */
  transaction<T>(fn: (tx: SqlExec) => Promise<T>): Promise<T>;
}

/** A unique or primary key already holds the value (SQLite SQLITE_CONSTRAINT_UNIQUE/PRIMARYKEY, SQLSTATE 23505). */
export class ConflictError extends Error {
  override name = 'ConflictError';
}
