// The accounts store's PostgreSQL driver (node-postgres): the history's database (`--db postgres://…`).
// Placeholders are written `?` in the store and numbered here; bigint columns (epoch ms) come back as numbers.
import pg from 'pg';
import { ConflictError, type Row, type SqlDriver, type SqlExec, type SqlValue } from './sql.ts';

const INT8_OID = 20;
const typeParsers = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID
      ? (text: string) => Number(text)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** Any constant: the key of the advisory lock that serialises migrations of the accounts schema. */
const MIGRATION_LOCK = 0x6d79_6361; // "myca"

function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function translate(err: unknown): unknown {
  if ((err as { code?: unknown }).code === '23505') return new ConflictError((err as Error).message, { cause: err });
  return err;
}

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

function execOn(q: Queryable): SqlExec {
  return {
    async all(sql, params = []) {
      try {
        return (await q.query({ text: numbered(sql), values: [...params], types: typeParsers })).rows as Row[];
      } catch (err) {
        throw translate(err);
      }
    },
    async run(sql, params = []) {
      try {
        return (await q.query({ text: numbered(sql), values: [...params], types: typeParsers })).rowCount ?? 0;
      } catch (err) {
        throw translate(err);
      }
    },
    async script(sql) {
      await q.query(sql);
    },
  };
}

export interface PostgresDriverOptions {
  url: string;
  poolSize?: number;
  connectTimeoutMs?: number;
  onError?: (err: Error) => void;
}

export class PostgresDriver implements SqlDriver {
  readonly kind = 'postgres' as const;
  private pool: pg.Pool | undefined;
  private exec: SqlExec | undefined;

  constructor(private readonly options: PostgresDriverOptions) {}

  async open(): Promise<void> {
    if (this.pool !== undefined) return;
    const pool = new pg.Pool({
      connectionString: this.options.url,
      max: this.options.poolSize ?? 4,
      connectionTimeoutMillis: this.options.connectTimeoutMs ?? 5_000,
    });
    // An idle connection dropped by the server: the pool replaces it; say so instead of crashing the process.
    pool.on('error', (err) => this.options.onError?.(err));
    this.pool = pool;
    this.exec = execOn(pool);
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    this.exec = undefined;
    await pool?.end();
  }

  all(sql: string, params?: readonly SqlValue[]): Promise<Row[]> {
    return this.ready().all(sql, params);
  }

  run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    return this.ready().run(sql, params);
  }

  script(sql: string): Promise<void> {
    return this.ready().script(sql);
  }

  async transaction<T>(fn: (tx: SqlExec) => Promise<T>): Promise<T> {
    if (this.pool === undefined) throw new Error('accounts store is not open');
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      const result = await fn(execOn(client));
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  private ready(): SqlExec {
    if (this.exec === undefined) throw new Error('accounts store is not open');
    return this.exec;
  }
}
