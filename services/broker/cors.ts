// Cross-origin reads of the REST API: the dashboard page is served from its own origin (`mycelium dashboard`,
// another port) and reads history with `fetch` and the user's token in `Authorization: Bearer`. Tokens are never
// ambient (no cookies), so what CORS guards against (a foreign page riding on the browser's credentials) cannot
// happen to a request that carries a token: the page that sends one already holds it. The rules:
//   - preflight (OPTIONS under /api/v1/) is answered for GET with the Authorization header, nothing else, so a
//     foreign page can never PUT or DELETE from a browser;
//   - a GET's answer is readable cross-origin only when the request carried an Authorization header: with
//     --allow-anonymous-viewers, a page on the internet cannot read an intranet broker through a visitor's browser.
import type { FastifyInstance } from 'fastify';

/** How long a browser may reuse a preflight answer. */
export const PREFLIGHT_MAX_AGE_S = 600;

export function registerCors(app: FastifyInstance): void {
  app.addHook('onRequest', async (req, reply) => {
    const origin = req.headers.origin;
    if (origin === undefined || !req.url.startsWith('/api/v1/')) return;
    reply.header('vary', 'Origin');
    if (req.method === 'GET' && req.headers.authorization !== undefined) {
      reply.header('access-control-allow-origin', origin);
      reply.header('access-control-expose-headers', 'Content-Disposition');
    }
  });
  app.options('/api/v1/*', async (req, reply) => {
    const origin = req.headers.origin;
    reply.header('vary', 'Origin');
    if (origin === undefined) return reply.code(204).send();
    return reply
      .code(204)
      .header('access-control-allow-origin', origin)
      .header('access-control-allow-methods', 'GET')
      .header('access-control-allow-headers', 'Authorization')
      .header('access-control-max-age', String(PREFLIGHT_MAX_AGE_S))
      .send();
  });
}
