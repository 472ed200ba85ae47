// The accounts store's SQLite driver (better-sqlite3): the history's file (`--db sqlite:<path>`), WAL mode.
// better-sqlite3 is synchronous; a transaction may await between statements, so calls made meanwhile by others
// wait for it (`idle`) instead of slipping into it.
import Database from 'better-sqlite3';
import { ConflictError, type Row, type SqlDriver, type SqlExec, type SqlValue } from './sql.ts';

function translate(err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    return new ConflictError((err as Error).message, { cause: err });
  }
  return err;
}

export class SqliteDriver implements SqlDriver {
  readonly kind = 'sqlite' as const;
  private db: Database.Database | undefined;
  private idle: Promise<void> = Promise.resolve();
  private readonly exec: SqlExec = {
    all: async (sql, params = []) => this.allNow(sql, params),
    run: async (sql, params = []) => this.runNow(sql, params),
    script: async (sql) => {
      this.handle().exec(sql);
    },
  };

  constructor(private readonly path: string) {}

  async open(): Promise<void> {
    if (this.db !== undefined) return;
    const db = new Database(this.path);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    this.db = db;
  }

  async close(): Promise<void> {
    await this.idle;
    this.db?.close();
    this.db = undefined;
  }

  async all(sql: string, params: readonly SqlValue[] = []): Promise<Row[]> {
    await this.idle;
    return this.allNow(sql, params);
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    await this.idle;
    return this.runNow(sql, params);
  }

  async script(sql: string): Promise<void> {
    await this.idle;
    this.handle().exec(sql);
  }

  async transaction<T>(fn: (tx: SqlExec) => Promise<T>): Promise<T> {
    const before = this.idle;
    let release = () => {};
    this.idle = new Promise<void>((resolve) => {
      release = resolve;
    });
    await before;
    const db = this.handle();
    try {
      db.exec('BEGIN IMMEDIATE');
      try {
        const result = await fn(this.exec);
        db.exec('COMMIT');
        return result;
      } catch (err) {
        db.exec('ROLLBACK');
        throw err;
      }
    } finally {
      release();
    }
  }

  private handle(): Database.Database {
    if (this.db === undefined) throw new Error('accounts store is not open');
    return this.db;
  }

  private allNow(sql: string, params: readonly SqlValue[]): Row[] {
    try {
      return this.handle()
        .prepare(sql)
        .all(...params) as Row[];
    } catch (err) {
      throw translate(err);
    }
  }

  private runNow(sql: string, params: readonly SqlValue[]): number {
    try {
      return this.handle()
        .prepare(sql)
        .run(...params).changes;
    } catch (err) {
      throw translate(err);
    }
  }
}
