// Cross-origin requests to the REST API. The dashboard page is served from its own origin (`mycelium dashboard`,
// another port) and calls the broker with `fetch`. Three kinds of request, three rules:
//
// 1. Reads with a token (GET + `Authorization: Bearer`), from any origin. Tokens are never ambient, so what CORS
//    guards against (a foreign page riding on the browser's credentials) cannot happen to a request that carries
//    one: the page that sends it already holds it. A preflight from any origin may ask for GET with the
//    Authorization header, nothing else; a GET's answer is readable only when the request carried that header, so
//    with --allow-anonymous-viewers a page on the internet cannot read an intranet broker through a visitor.
// 2. Writes with a token (POST, PUT, DELETE + Bearer: API keys, PIN claims, rules), only from the dashboard origins
//    the operator listed (--dashboard-origin, repeatable; `mycelium up` passes its own dashboard's). A foreign
//    origin's preflight is answered as in 1 (GET only), so the browser never sends its write.
// 3. The cookie routes (/api/v1/login, /refresh, /logout): the refresh credential is an httpOnly cookie, the one
//    ambient credential of the API. Only a listed origin gets `Access-Control-Allow-Credentials: true` with its
//    exact origin (never `*`, which browsers refuse with credentials anyway); any other origin gets no CORS header
//    at all, so its browser neither sends the preflighted POST nor shows it the answer. CSRF is closed three ways:
//    the cookie is SameSite=Strict (another site's page never sends it), refresh and logout demand the custom
//    header X-Mycelium-Refresh (a form or an image cannot set a header, and a script can only after a preflight),
//    and that preflight succeeds only for a listed origin. Login itself sets, not reads, the cookie.
// The page and the broker must be the same *site* for the cookie to flow (localhost:8080 and localhost:8000 are;
// 127.0.0.1 and localhost are not): SameSite compares host names, not ports.
import type { FastifyInstance } from 'fastify';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import type { OptionTable } from '../common/config.ts';
import { pathOf } from '../common/upgrade.ts';

/** How long a browser may reuse a preflight answer. */
export const PREFLIGHT_MAX_AGE_S = 600;

/** The routes that read or set the refresh cookie: credentialed CORS, listed origins only. */
export const COOKIE_ROUTES: ReadonlySet<string> = new Set(['/api/v1/login', '/api/v1/refresh', '/api/v1/logout']);

/**
 * [invites-ui] Anonymous writes a dashboard page makes: accepting an invitation (the person has no credential yet).
 * Rule 2 without the token: a listed origin may read the answer; no cookie is involved, and the route is open to
 * any client outside a browser anyway (it is rate-limited per address), so nothing ambient is exposed.
 */
export const ANONYMOUS_WRITE_ROUTES: ReadonlySet<string> = new Set(['/api/v1/invitations/accept']);

const WRITE_METHODS = 'GET, POST, PUT, DELETE';

export const corsOptions = {
  dashboardOrigin: {
    type: 'list',
    description:
      'origin of a dashboard page allowed to sign in (cookie routes) and to write with a token, e.g. http://localhost:8080; repeatable',
  },
} as const satisfies OptionTable;

/**
 * The allowed origins, normalised as browsers send them (`new URL(x).origin`: lower case, no default port, no
 * path). Anything that is not an http(s) origin is a configuration error, reported with the flag's name.
 */
export function parseOrigins(values: readonly string[] | undefined): ReadonlySet<string> {
  const out = new Set<string>();
  for (const raw of values ?? []) {
    const value = raw.trim();
    if (value === '') continue;
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin === 'null') {
      throw new MyceliumError(
        ErrorCode.Config,
        `--dashboard-origin: ${JSON.stringify(raw)} is not an http(s) origin like http://localhost:8080`,
      );
    }
    out.add(url.origin);
  }
  return out;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** [accounts-ui] The dashboard origins of rules 2 and 3 (set by the broker before registerCors). */
    dashboardOrigins?: ReadonlySet<string>;
  }
}

/** Gives `app` its list of dashboard origins; registerCors reads it per request. */
export function allowDashboardOrigins(app: FastifyInstance, origins: readonly string[] | undefined): void {
  app.decorate('dashboardOrigins', parseOrigins(origins));
}

export function registerCors(app: FastifyInstance): void {
  const listed = (origin: string) => app.dashboardOrigins?.has(origin) === true;

  app.addHook('onRequest', async (req, reply) => {
    const origin = req.headers.origin;
    if (origin === undefined || !req.url.startsWith('/api/v1/')) return;
    reply.header('vary', 'Origin');
    if (COOKIE_ROUTES.has(pathOf(req.raw))) {
      if (listed(origin)) {
        reply.header('access-control-allow-origin', origin);
        reply.header('access-control-allow-credentials', 'true');
      }
      return;
    }
    if (req.headers.authorization === undefined) {
      if (req.method === 'POST' && ANONYMOUS_WRITE_ROUTES.has(pathOf(req.raw)) && listed(origin)) {
        reply.header('access-control-allow-origin', origin);
      }
      return;
    }
    if (req.method === 'GET' || (req.method !== 'OPTIONS' && listed(origin))) {
      reply.header('access-control-allow-origin', origin);
      reply.header('access-control-expose-headers', 'Content-Disposition');
    }
  });

  app.options('/api/v1/*', async (req, reply) => {
    const origin = req.headers.origin;
    reply.header('vary', 'Origin');
    if (origin === undefined) return reply.code(204).send();
    const cookie = COOKIE_ROUTES.has(pathOf(req.raw));
    if (listed(origin)) {
      reply
        .header('access-control-allow-origin', origin)
        .header('access-control-allow-methods', cookie ? 'POST' : WRITE_METHODS)
        .header(
          'access-control-allow-headers',
          cookie ? 'Content-Type, X-Mycelium-Refresh' : 'Authorization, Content-Type',
        )
        .header('access-control-max-age', String(PREFLIGHT_MAX_AGE_S));
      if (cookie) reply.header('access-control-allow-credentials', 'true');
      return reply.code(204).send();
    }
    // A foreign origin: nothing for the cookie routes (the browser refuses), reads with a token for the rest.
    if (cookie) return reply.code(204).send();
    return reply
      .code(204)
      .header('access-control-allow-origin', origin)
      .header('access-control-allow-methods', 'GET')
      .header('access-control-allow-headers', 'Authorization')
      .header('access-control-max-age', String(PREFLIGHT_MAX_AGE_S))
      .send();
  });
}
