// The accounts layer on one in-process bus for tests of its REST routes: the accounts service on a SQLite database
// in a temporary directory, a second store connection on the same file (as the command line would change it), and
// a real broker serving HTTP on port 0. Sign-in limits are raised: tests sign the same people in many times.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteDriver } from '../../services/accounts/driver-sqlite.ts';
import {
  type AccountsServiceDeps,
  type AccountsServiceOptions,
  AccountsService,
} from '../../services/accounts/service.ts';
import { AccountsStore } from '../../services/accounts/store.ts';
import { MemoryBus } from '../../services/bus/memory-bus.ts';
import { silentLogger } from '../../services/common/log.ts';
import { startBroker, type TestBroker } from './broker.ts';
import { makeKeys } from './keys.ts';

export interface Answer {
  status: number;
  body: Record<string, unknown>;
  cookie: string | null;
}

export interface AccountsRig {
  bus: MemoryBus;
  /** The command line's connection to the service's database. */
  store: AccountsStore;
  service: AccountsService;
  tb: TestBroker;
  http(
    method: string,
    path: string,
    init?: { token?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<Answer>;
  /** Signs in; the access token, or throws with the answer. */
  signIn(username: string, password: string, org?: string): Promise<string>;
  stop(): Promise<void>;
}

const GENEROUS = { perSecond: 100, burst: 1000 };

export async function startAccounts(
  options: AccountsServiceOptions = {},
  extra: Partial<Pick<AccountsServiceDeps, 'log' | 'mailer'>> = {},
): Promise<AccountsRig> {
  const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-rig-'));
  const keys = makeKeys();
  const bus = new MemoryBus();
  await bus.start();
  const service = new AccountsService(
    {
      revocationPollMs: 100,
      ...options,
      limits: { loginPerAddress: GENEROUS, loginPerAccount: GENEROUS, ...options.limits },
    },
    {
      bus,
      store: new AccountsStore(new SqliteDriver(join(dir, 'history.db'))),
      privateKey: keys.privateKey,
      log: extra.log ?? silentLogger(),
      ...(extra.mailer !== undefined ? { mailer: extra.mailer } : {}),
    },
  );
  await service.start();
  const store = new AccountsStore(new SqliteDriver(join(dir, 'history.db')));
  await store.open();
  const tb = await startBroker({}, keys, bus);

  const http: AccountsRig['http'] = async (method, path, init = {}) => {
    const res = await fetch(`${tb.http}${path}`, {
      method,
      headers: {
        ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...init.headers,
      },
      body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
    });
    const text = await res.text();
    let body: Record<string, unknown> = {};
    if (text) body = res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : { text };
    return { status: res.status, body, cookie: res.headers.get('set-cookie') };
  };

  return {
    bus,
    store,
    service,
    tb,
    http,
    async signIn(username, password, org) {
      const res = await http('POST', '/api/v1/login', {
        body: { username, password, ...(org !== undefined ? { org } : {}) },
      });
      if (res.status !== 200) throw new Error(`sign-in of ${username}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.accessToken as string;
    },
    async stop() {
      await tb.stop();
      await service.stop();
      await store.close();
      await bus.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
