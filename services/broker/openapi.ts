// The REST API's OpenAPI document without a running broker: the routes registered on an app that never
// listens, with dependencies that are never called (registering a route only stores its handler). What
// `npm run docs:api` renders into docs/api.md, and what test/api-docs.test.ts compares it with.
import Fastify from 'fastify';
import { silentLogger } from '../common/log.ts';
import { type HttpApiDeps, registerHttpApi } from './http-api.ts';

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
  } as unknown as HttpApiDeps;
  registerHttpApi(app, deps);
  await app.ready();
  const doc = app.swagger() as unknown as Record<string, unknown>;
  await app.close();
  return doc;
}
