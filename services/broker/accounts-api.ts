// REST routes of the accounts layer (docs/accounts.md). The broker holds no accounts: it relays each request to
// the accounts service over the bus (services/accounts/protocol.ts) with the caller as it authenticated them, and
// keeps the one thing the service cannot: the refresh cookie. No accounts service: 503 with the reason.
//
// CSRF: the refresh credential is a cookie, so the routes that read it (refresh, logout) also demand a custom
// header; a cross-site form or image cannot set one, and cors.ts lets no other origin preflight a POST.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Bus, BusError } from '../bus/bus.ts';
import type { Logger } from '../common/log.ts';
import type { TokenClaims, VerifyResult } from '../common/tokens.ts';
import { accountsSubjects, type Caller, encode, type Reply } from '../accounts/protocol.ts';
import { ErrorCode } from '../protocol/errors.ts';
import type { Role } from '../protocol/messages.ts';
import { parseJson } from '../protocol/schema.ts';
import { accountsSchemas } from './accounts-schemas.ts';
import { authenticateHook } from './auth-hook.ts';
import type { BrokerCounters } from './ports.ts';

export const REFRESH_COOKIE = 'myc_refresh';
export const REFRESH_HEADER = 'x-mycelium-refresh';
export const PIN_SECRET_HEADER = 'x-pin-secret';
export const ACCOUNTS_TIMEOUT_MS = 10_000;
const COOKIE_PATH = '/api/v1/';

export interface AccountsApiDeps {
  bus: Pick<Bus, 'request'>;
  log: Logger;
  counters: Pick<BrokerCounters, 'rejected'>;
  /** The broker's token check (JWT or API key), as http-api.ts's HttpAuth has it; used through auth-hook.ts. */
  auth: { verify(token: string | undefined, roles: readonly Role[]): Promise<VerifyResult> };
  timeoutMs?: number;
}

function problem(reply: FastifyReply, status: number, code: string, message: string) {
  return reply.code(status).send({ error: code, message });
}

/** The value of one cookie, or undefined. Plain parsing: the only cookie read is ours, of base64url characters. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function refreshCookie(req: FastifyRequest, value: string, maxAgeSeconds: number): string {
  const secure = req.protocol === 'https' ? '; Secure' : '';
  return `${REFRESH_COOKIE}=${value}; Path=${COOKIE_PATH}; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Strict${secure}`;
}

const callerOf = (c: TokenClaims): Caller => ({
  sub: c.sub,
  role: c.role,
  ...(c.org !== undefined ? { org: c.org } : {}),
  ...(c.jti !== undefined ? { jti: c.jti } : {}),
});

export function registerAccountsApi(app: FastifyInstance, deps: AccountsApiDeps): void {
  const timeout = deps.timeoutMs ?? ACCOUNTS_TIMEOUT_MS;

  /** One request to the service; a Failure reply or no service becomes the HTTP answer. */
  async function ask<T>(reply: FastifyReply, subject: string, body: object): Promise<({ ok: true } & T) | undefined> {
    let answer: Reply<T> | undefined;
    try {
      const msg = await deps.bus.request(subject, encode(body), timeout);
      const parsed = parseJson(Buffer.from(msg.data).toString());
      answer = parsed.ok ? (parsed.value as Reply<T>) : undefined;
    } catch (err) {
      if (!(err instanceof BusError)) throw err;
      deps.counters.rejected('accounts-unavailable').inc();
      problem(reply, 503, ErrorCode.Unavailable, `the accounts service did not answer (${err.code})`);
      return undefined;
    }
    if (answer === undefined || typeof answer !== 'object') {
      problem(reply, 503, ErrorCode.Unavailable, 'the accounts service answered nonsense');
      return undefined;
    }
    if (answer.ok !== true) {
      deps.counters.rejected(`accounts-${answer.status}`).inc();
      problem(reply, answer.status >= 400 && answer.status < 600 ? answer.status : 503, answer.error, answer.message);
      return undefined;
    }
    return answer;
  }

  const authenticate = authenticateHook(deps);

  const needsHeader = async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.headers[REFRESH_HEADER] !== '1') {
      deps.counters.rejected('csrf-header-missing').inc();
      deps.log.warn({ remote: req.ip, url: req.url }, 'refresh cookie request without the custom header');
      return problem(reply, 403, ErrorCode.Forbidden, `send the header ${REFRESH_HEADER}: 1`);
    }
  };

  app.register(
    async (api) => {
      api.post<{ Body: { username: string; password: string; org?: string } }>(
        '/login',
        { schema: accountsSchemas.login },
        async (req, reply) => {
          const { username, password, org } = req.body;
          const answer = await ask<{
            accessToken: string;
            expiresIn: number;
            refresh: string;
            refreshMaxAgeSeconds: number;
          }>(reply, accountsSubjects.login, {
            username,
            password,
            ...(org !== undefined ? { org } : {}),
            address: req.ip,
          });
          if (answer === undefined) return reply;
          reply.header('set-cookie', refreshCookie(req, answer.refresh, answer.refreshMaxAgeSeconds));
          reply.header('cache-control', 'no-store');
          return { accessToken: answer.accessToken, expiresIn: answer.expiresIn };
        },
      );

      api.post('/refresh', { schema: accountsSchemas.refresh, onRequest: [needsHeader] }, async (req, reply) => {
        const refresh = cookieValue(req.headers.cookie, REFRESH_COOKIE);
        if (refresh === undefined) return problem(reply, 401, ErrorCode.Unauthorized, 'no refresh cookie: sign in');
        const answer = await ask<{
          accessToken: string;
          expiresIn: number;
          refresh: string;
          refreshMaxAgeSeconds: number;
        }>(reply, accountsSubjects.refresh, { refresh });
        if (answer === undefined) {
          // A spent or revoked credential: the browser forgets it.
          if (reply.statusCode === 401) reply.header('set-cookie', refreshCookie(req, '', 0));
          return reply;
        }
        reply.header('set-cookie', refreshCookie(req, answer.refresh, answer.refreshMaxAgeSeconds));
        reply.header('cache-control', 'no-store');
        return { accessToken: answer.accessToken, expiresIn: answer.expiresIn };
      });

      api.post('/logout', { schema: accountsSchemas.logout, onRequest: [needsHeader] }, async (req, reply) => {
        const refresh = cookieValue(req.headers.cookie, REFRESH_COOKIE);
        if (refresh !== undefined) await ask(reply, accountsSubjects.logout, { refresh });
        reply.code(200).header('set-cookie', refreshCookie(req, '', 0));
        return { signedOut: true as const };
      });

      api.get('/keys', { schema: accountsSchemas.listKeys, onRequest: [authenticate] }, async (req, reply) => {
        const answer = await ask<{ keys: unknown[] }>(reply, accountsSubjects.keysList, {
          caller: callerOf(req.claims!),
        });
        return answer === undefined ? reply : { keys: answer.keys };
      });

      api.post<{ Body: Record<string, unknown> }>(
        '/keys',
        { schema: accountsSchemas.createKey, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<{ key: unknown; text: string }>(reply, accountsSubjects.keysCreate, {
            ...req.body,
            caller: callerOf(req.claims!),
          });
          if (answer === undefined) return reply;
          return reply.code(201).header('cache-control', 'no-store').send({ key: answer.key, text: answer.text });
        },
      );

      api.delete<{ Params: { id: string } }>(
        '/keys/:id',
        { schema: accountsSchemas.revokeKey, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<{ id: string }>(reply, accountsSubjects.keysRevoke, {
            id: req.params.id,
            caller: callerOf(req.claims!),
          });
          return answer === undefined ? reply : { id: answer.id, revoked: true as const };
        },
      );

      api.post('/pins', { schema: accountsSchemas.createPin }, async (req, reply) => {
        const answer = await ask<{ pin: string; secret: string; expiresIn: number }>(
          reply,
          accountsSubjects.pinsCreate,
          {
            address: req.ip,
          },
        );
        if (answer === undefined) return reply;
        return reply
          .code(201)
          .header('cache-control', 'no-store')
          .send({ pin: answer.pin, secret: answer.secret, expiresIn: answer.expiresIn });
      });

      api.get<{ Params: { pin: string } }>('/pins/:pin', { schema: accountsSchemas.pollPin }, async (req, reply) => {
        const secret = req.headers[PIN_SECRET_HEADER];
        const answer = await ask<{ status: 'pending' | 'claimed'; key?: string; node?: string }>(
          reply,
          accountsSubjects.pinsPoll,
          { pin: req.params.pin, secret: typeof secret === 'string' ? secret : '', address: req.ip },
        );
        if (answer === undefined) return reply;
        reply.header('cache-control', 'no-store');
        return { status: answer.status, key: answer.key, node: answer.node };
      });

      api.post<{ Params: { pin: string }; Body: { node: string; org?: string } }>(
        '/pins/:pin/claim',
        { schema: accountsSchemas.claimPin, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<{ pin: string; node: string; keyId: string }>(reply, accountsSubjects.pinsClaim, {
            pin: req.params.pin,
            node: req.body.node,
            ...(req.body.org !== undefined ? { org: req.body.org } : {}),
            caller: callerOf(req.claims!),
          });
          return answer === undefined ? reply : { pin: answer.pin, node: answer.node, keyId: answer.keyId };
        },
      );

      api.get('/orgs', { schema: accountsSchemas.listOrgs, onRequest: [authenticate] }, async (req, reply) => {
        const answer = await ask<{ orgs: unknown[] }>(reply, accountsSubjects.orgsList, {
          caller: callerOf(req.claims!),
        });
        return answer === undefined ? reply : { orgs: answer.orgs };
      });

      api.post<{ Body: { name: string } }>(
        '/orgs',
        { schema: accountsSchemas.createOrg, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<{ id: string; name: string; createdAt: number }>(
            reply,
            accountsSubjects.orgsCreate,
            {
              name: req.body.name,
              caller: callerOf(req.claims!),
            },
          );
          if (answer === undefined) return reply;
          return reply.code(201).send({ id: answer.id, name: answer.name, createdAt: answer.createdAt });
        },
      );

      api.get('/users', { schema: accountsSchemas.listUsers, onRequest: [authenticate] }, async (req, reply) => {
        const answer = await ask<{ users: unknown[] }>(reply, accountsSubjects.usersList, {
          caller: callerOf(req.claims!),
        });
        return answer === undefined ? reply : { users: answer.users };
      });

      api.put<{ Params: { name: string }; Body: { disabled: boolean } }>(
        '/users/:name/disabled',
        { schema: accountsSchemas.disableUser, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<{ name: string; disabled: boolean }>(reply, accountsSubjects.usersDisable, {
            name: req.params.name,
            disabled: req.body.disabled,
            caller: callerOf(req.claims!),
          });
          return answer === undefined ? reply : { name: answer.name, disabled: answer.disabled };
        },
      );

      api.post<{ Body: { username: string; password: string; role?: string; org?: string; admin?: boolean } }>(
        '/users',
        { schema: accountsSchemas.createUser, onRequest: [authenticate] },
        async (req, reply) => {
          const { username, password, role, org, admin } = req.body;
          const answer = await ask<Record<string, unknown>>(reply, accountsSubjects.usersCreate, {
            username,
            password,
            role,
            org,
            admin,
            caller: callerOf(req.claims!),
          });
          if (answer === undefined) return reply;
          const { ok: _ok, ...user } = answer;
          return reply.code(201).send(user);
        },
      );

      api.put<{ Params: { name: string }; Body: { role: string; org?: string } }>(
        '/users/:name/role',
        { schema: accountsSchemas.setUserRole, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<{ name: string; org: string; role: string }>(reply, accountsSubjects.usersRole, {
            name: req.params.name,
            role: req.body.role,
            org: req.body.org,
            caller: callerOf(req.claims!),
          });
          return answer === undefined ? reply : { name: answer.name, org: answer.org, role: answer.role };
        },
      );

      api.put<{ Params: { name: string }; Body: { password: string; oldPassword?: string } }>(
        '/users/:name/password',
        { schema: accountsSchemas.setUserPassword, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<{ name: string }>(reply, accountsSubjects.usersPassword, {
            name: req.params.name,
            password: req.body.password,
            oldPassword: req.body.oldPassword,
            caller: callerOf(req.claims!),
          });
          return answer === undefined ? reply : { name: answer.name, passwordChanged: true as const };
        },
      );

      api.post<{ Body: { email: string; role?: string; org?: string } }>(
        '/invitations',
        { schema: accountsSchemas.invite, onRequest: [authenticate] },
        async (req, reply) => {
          const answer = await ask<Record<string, unknown>>(reply, accountsSubjects.invitationsCreate, {
            ...req.body,
            caller: callerOf(req.claims!),
          });
          if (answer === undefined) return reply;
          const { ok: _ok, ...body } = answer;
          return reply.code(201).header('cache-control', 'no-store').send(body);
        },
      );

      api.post<{ Body: { invitation: string; username: string; password: string } }>(
        '/invitations/accept',
        { schema: accountsSchemas.acceptInvitation },
        async (req, reply) => {
          const { invitation, username, password } = req.body;
          const answer = await ask<{ username: string; org: string; role: string }>(
            reply,
            accountsSubjects.invitationsAccept,
            { invitation, username, password, address: req.ip },
          );
          if (answer === undefined) return reply;
          return reply.code(201).send({ username: answer.username, org: answer.org, role: answer.role });
        },
      );
    },
    { prefix: '/api/v1' },
  );
}
