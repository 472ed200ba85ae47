// `mycelium org|user|key …`: account administration straight on the database (the same --db as the history
// service; the accounts service need not run). Passwords come from stdin, never from a flag (flags show in `ps`
// and shell history); a new key is printed alone on stdout so scripts can capture it.
//   mycelium org create NAME | org list
//   mycelium user add NAME (--org ORG --role ROLE | --admin) | user passwd NAME | user disable NAME
//   | user enable NAME | user list
//   mycelium key create --org ORG (--role ROLE | --node UID) [--ttl 30d] [--label TEXT] | key list [--org ORG]
//   | key revoke ID
import { helpText, type OptionTable, resolveConfig } from '../common/config.ts';
import { fatal } from '../common/run.ts';
import { parseDuration } from '../common/tokens.ts';
import { addUser, createKey, createOrg, disableUser, publicKeyView, requireOrg, setPassword } from './admin.ts';
import { defaultAccountsDb, openAccountsStore } from './open-store.ts';
import { MAX_PASSWORD_LENGTH } from './secrets.ts';
import type { AccountsStore } from './store.ts';

const dbOption = {
  type: 'string',
  description:
    "the accounts database, the history service's: sqlite:<path> (default history.db beside the keys) or postgres://…",
} as const;

export const orgOptions = { db: dbOption } as const satisfies OptionTable;
export const userOptions = {
  db: dbOption,
  org: { type: 'string', description: 'organisation the user joins (user add)', env: false },
  role: { type: 'string', default: 'viewer', description: 'role in --org: viewer, operator, admin', env: false },
  admin: { type: 'boolean', default: false, description: 'a system admin: manages every organisation', env: false },
} as const satisfies OptionTable;
export const keyOptions = {
  db: dbOption,
  org: { type: 'string', description: 'organisation the key belongs to', env: false },
  role: { type: 'string', description: 'role the key has in --org: viewer, operator, admin', env: false },
  node: { type: 'string', description: 'a device key: acts only as this node uid', env: false },
  gatewayId: {
    type: 'string',
    description: 'a gateway key: the gateway connects as this id (--token), its nodes join --org',
    env: false,
  },
  ttl: { type: 'string', description: 'lifetime (30m, 12h, 90d); default: until revoked', env: false },
  label: { type: 'string', description: 'a note shown in key list', env: false },
} as const satisfies OptionTable;

const ORG_SUMMARY = 'Manage organisations.\n\n  mycelium org create NAME\n  mycelium org list';
const USER_SUMMARY = `Manage users (passwords are read from stdin).

  mycelium user add NAME --org ORG --role ROLE [--admin]
  mycelium user add NAME --admin
  mycelium user passwd NAME
  mycelium user disable NAME | user enable NAME
  mycelium user list`;
const KEY_SUMMARY = `Manage API keys (Authorization: Bearer myk_…). create prints the key alone on stdout, once.

  mycelium key create --org ORG --role ROLE [--ttl 30d] [--label TEXT]
  mycelium key create --org ORG --node UID [--ttl 365d]
  mycelium key create --org ORG --gateway-id ID        (then: mycelium ws-gateway --token <key>)
  mycelium key list [--org ORG]
  mycelium key revoke ID`;

/** Splits `VERB [NAME] --flags…`: the flags parser takes no positionals. */
function split(argv: string[]): { verb: string | undefined; name: string | undefined; flags: string[] } {
  const verb = argv[0]?.startsWith('-') ? undefined : argv[0];
  const rest = verb === undefined ? argv : argv.slice(1);
  const name = rest[0] !== undefined && !rest[0].startsWith('-') ? rest[0] : undefined;
  return { verb, name, flags: name === undefined ? rest : rest.slice(1) };
}

async function withStore<T>(db: string | undefined, fn: (store: AccountsStore) => Promise<T>): Promise<T> {
  const store = await openAccountsStore(db ?? defaultAccountsDb());
  await store.open();
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** The first line of stdin (a pipe, or typed at a terminal). */
export async function readPassword(input: NodeJS.ReadableStream = process.stdin): Promise<string> {
  if ((input as { isTTY?: boolean }).isTTY) process.stderr.write('password: ');
  let text = '';
  for await (const chunk of input) {
    text += chunk.toString();
    const nl = text.indexOf('\n');
    if (nl >= 0) {
      text = text.slice(0, nl);
      break;
    }
    if (text.length > MAX_PASSWORD_LENGTH + 2) break;
  }
  (input as { pause?: () => void }).pause?.();
  return text.replace(/\r$/, '');
}

function run<T extends OptionTable>(
  command: string,
  summary: string,
  table: T,
  argv: string[],
  verbs: Record<string, (config: ReturnType<typeof resolveConfig<T>>, name: string | undefined) => Promise<void>>,
): Promise<void> {
  const { verb, name, flags } = split(argv);
  let config: ReturnType<typeof resolveConfig<T>>;
  try {
    config = resolveConfig(table, flags);
  } catch (err) {
    fatal(`mycelium ${command}: ${(err as Error).message}`);
  }
  if (config.help || verb === undefined) {
    process.stdout.write(helpText(command, summary, table));
    return Promise.resolve();
  }
  if (!Object.hasOwn(verbs, verb)) fatal(`mycelium ${command}: unknown ${command} command "${verb}"\n\n${summary}`);
  return verbs[verb](config, name).catch((err: Error) => fatal(`mycelium ${command} ${verb}: ${err.message}`));
}

export function orgMain(argv: string[]): Promise<void> {
  return run('org', ORG_SUMMARY, orgOptions, argv, {
    create: (c, name) =>
      withStore(c.db, async (store) => {
        const org = await createOrg(store, name);
        process.stderr.write(`organisation ${org.name} created (id ${org.id})\n`);
      }),
    list: (c) =>
      withStore(c.db, async (store) => {
        for (const org of await store.listOrgs()) process.stdout.write(`${org.id}  ${org.name}\n`);
      }),
  });
}

export function userMain(argv: string[]): Promise<void> {
  return run('user', USER_SUMMARY, userOptions, argv, {
    add: async (c, name) => {
      const password = await readPassword();
      await withStore(c.db, async (store) => {
        const user = await addUser(store, { name, password, org: c.org, role: c.role, systemAdmin: c.admin });
        process.stderr.write(
          `user ${user.name} created${c.org ? ` (${c.role} of ${c.org})` : ''}${c.admin ? ' (system admin)' : ''}\n`,
        );
      });
    },
    passwd: async (c, name) => {
      const password = await readPassword();
      await withStore(c.db, async (store) => {
        const user = await setPassword(store, name, password);
        process.stderr.write(`password of ${user.name} changed; their sessions were ended\n`);
      });
    },
    disable: (c, name) =>
      withStore(c.db, async (store) => {
        const user = await disableUser(store, name, true);
        process.stderr.write(`user ${user.name} disabled; their sessions end within seconds\n`);
      }),
    enable: (c, name) =>
      withStore(c.db, async (store) => {
        const user = await disableUser(store, name, false);
        process.stderr.write(`user ${user.name} enabled\n`);
      }),
    list: (c) =>
      withStore(c.db, async (store) => {
        for (const user of await store.listUsers()) {
          const orgs = (await store.memberships(user.id)).map((m) => `${m.orgName}:${m.role}`).join(',');
          const flags = `${user.systemAdmin ? ' admin' : ''}${user.disabled ? ' disabled' : ''}`;
          process.stdout.write(`${user.name}  ${orgs || '-'}${flags}\n`);
        }
      }),
  });
}

export function keyMain(argv: string[]): Promise<void> {
  return run('key', KEY_SUMMARY, keyOptions, argv, {
    create: (c) =>
      withStore(c.db, async (store) => {
        const org = await requireOrg(store, c.org);
        let ttlSeconds: number | undefined;
        if (c.ttl !== undefined) {
          ttlSeconds = parseDuration(c.ttl);
          if (ttlSeconds === undefined || ttlSeconds <= 0) throw new Error(`--ttl: cannot read "${c.ttl}"`);
        }
        const { key, text } = await createKey(store, {
          orgId: org.id,
          role: c.role,
          ...(c.node !== undefined ? { node: c.node } : {}),
          ...(c.gatewayId !== undefined ? { gateway: c.gatewayId } : {}),
          ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
          ...(c.label !== undefined ? { label: c.label } : {}),
        });
        process.stdout.write(`${text}\n`);
        process.stderr.write(
          `key ${key.id} created (${org.name}, ${key.nodeUid ? `${key.role} ${key.nodeUid}` : key.role})\n`,
        );
      }),
    list: (c) =>
      withStore(c.db, async (store) => {
        const org = c.org === undefined ? undefined : await requireOrg(store, c.org);
        const names = new Map((await store.listOrgs()).map((o) => [o.id, o.name]));
        for (const key of await store.listApiKeys(org?.id)) {
          const v = publicKeyView(key);
          const state = v.revoked
            ? 'revoked'
            : v.expiresAt !== null && v.expiresAt <= Date.now()
              ? 'expired'
              : 'active';
          const used = v.lastUsedAt === null ? 'never used' : `used ${new Date(v.lastUsedAt).toISOString()}`;
          process.stdout.write(
            `${v.id}  ${names.get(v.orgId) ?? v.orgId}  ${v.nodeUid ? `${v.role}:${v.nodeUid}` : v.role}  ${state}  ${used}  ${JSON.stringify(v.label)}\n`,
          );
        }
      }),
    revoke: (c, id) =>
      withStore(c.db, async (store) => {
        if (id === undefined || !/^[0-9a-f]{16}$/.test(id)) throw new Error('give the key id (from key list)');
        if (!(await store.revokeApiKey(id))) throw new Error(`no active key ${id}`);
        process.stderr.write(`key ${id} revoked; services drop it within seconds\n`);
      }),
  });
}
