// `--db` to an accounts store: the same value the history service takes (sqlite:<path> or postgres://…), so both
// live in one database. Each driver's library is loaded only when it is chosen.
import { dirname, join } from 'node:path';
import { defaultKeyFile } from '../common/keys.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { AccountsStore } from './store.ts';

/** The history's default file: accounts and history share history.db beside the keys. */
export function defaultAccountsDb(keyFile: string = defaultKeyFile()): string {
  return `sqlite:${join(dirname(keyFile), 'history.db')}`;
}

export async function openAccountsStore(db: string, onError?: (err: Error) => void): Promise<AccountsStore> {
  if (db.startsWith('sqlite:')) {
    const path = db.slice('sqlite:'.length);
    if (path === '') throw new MyceliumError(ErrorCode.Config, '--db sqlite:<path> needs a path');
    const { SqliteDriver } = await import('./driver-sqlite.ts');
    return new AccountsStore(new SqliteDriver(path));
  }
  if (/^postgres(ql)?:\/\//.test(db)) {
    const { PostgresDriver } = await import('./driver-postgres.ts');
    return new AccountsStore(new PostgresDriver({ url: db, ...(onError ? { onError } : {}) }));
  }
  throw new MyceliumError(
    ErrorCode.Config,
    `--db must be sqlite:<path> or postgres://…, got ${JSON.stringify(db.slice(0, 80))}`,
  );
}
