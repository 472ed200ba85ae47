// A real PostgreSQL for tests (Debian's postgresql package), one cluster per test file: the start/stop code is
// utils/history/postgres-cluster.ts, shared with `npm run bench:history`. Durability is switched off: a test
// cluster is thrown away, and fsync on a shared CI disk would only slow every insert.
import { type PostgresCluster, startPostgresCluster } from '../../utils/history/postgres-cluster.ts';

export type { PostgresCluster } from '../../utils/history/postgres-cluster.ts';
export { createDatabase, postgresStoreOn } from '../../utils/history/stores.ts';

export const TEST_POSTGRES_SETTINGS: Readonly<Record<string, string>> = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  max_connections: '50',
  shared_buffers: '32MB',
};

/** `overrides` replace single settings, e.g. synchronous_commit=on where a test kills the server and reads on. */
export function startTestPostgres(overrides: Record<string, string> = {}): Promise<PostgresCluster> {
  return startPostgresCluster({ settings: { ...TEST_POSTGRES_SETTINGS, ...overrides } });
}
