// The REST API's OpenAPI document without a running broker: @fastify/swagger and the routes registered on an app
// that never listens, with dependencies that are never called (registering a route only stores its handler). What
// a broker serves at GET /api/v1/openapi.json (loaded on the first request, so swagger costs start-up nothing),
// what `npm run docs:api` renders into docs/api.md, and what test/api-docs.test.ts compares it with.
import swagger from '@fastify/swagger';
import Fastify from 'fastify';
import { silentLogger } from '../common/log.ts';
import { type HttpApiDeps, REST_API_VERSION, registerHttpApi } from './http-api.ts';
import { openApiOptions } from './rest-schemas.ts';

function unused(): never {
  throw new Error('openApiDocument: a route handler ran; this app only describes the routes');
}

export async function openApiDocument(): Promise<Record<string, unknown>> {
  const app = Fastify({ logger: false });
  const inert = new Proxy({}, { get: () => unused });
  const deps = {
    brokerId: 'describe',
    log: silentLogger(),
    config: { allowAnonymousViewers: false, publicMetrics: false },
    counters: inert,
    metrics: inert,
    bus: inert,
    table: inert,
    gateways: new Map(),
    peers: inert,
    writes: inert,
    ownership: inert,
    events: inert,
    auth: inert,
    openApiDocument: unused,
  } as unknown as HttpApiDeps;
  // Before any route: it collects the route schemas as they are added.
  app.register(swagger, openApiOptions(REST_API_VERSION));
  registerHttpApi(app, deps);
  await app.ready();
  const doc = app.swagger() as unknown as Record<string, unknown>;
  await app.close();
  return doc;
}
