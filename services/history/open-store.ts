// `--db` to a store: sqlite:<path> or postgres://…; each store's library is loaded only when it is chosen.
import { dirname, join } from 'node:path';
import { defaultKeyFile } from '../common/keys.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import type { HistoryStore } from './store.ts';

/** history.db in the data directory, beside the keys (~/.mycelium or $MYCELIUM_HOME). */
export function defaultDb(keyFile: string = defaultKeyFile()): string {
  return `sqlite:${join(dirname(keyFile), 'history.db')}`;
}

export async function openStore(db: string): Promise<HistoryStore> {
  if (db.startsWith('sqlite:')) {
    const path = db.slice('sqlite:'.length);
    if (path === '') throw new MyceliumError(ErrorCode.Config, '--db sqlite:<path> needs a path');
    const { SqliteHistoryStore } = await import('./store-sqlite.ts');
    return new SqliteHistoryStore({ path });
  }
  if (/^postgres(ql)?:\/\//.test(db)) {
    let mod: typeof import('./store-postgres.ts');
    try {
      mod = await import('./store-postgres.ts');
    } catch (err) {
      // pg is a dependency, so only a broken install gets here.
      throw new MyceliumError(
        ErrorCode.Config,
        `the PostgreSQL history store cannot be loaded: ${(err as Error).message}`,
      );
    }
    return new mod.PostgresHistoryStore({ url: db });
  }
  throw new MyceliumError(
    ErrorCode.Config,
    `--db must be sqlite:<path> or postgres://…, got ${JSON.stringify(db.slice(0, 80))}`,
  );
}
