// [console] REST for the device console (issue 12), registered inside the authenticated /api/v1 scope.
import type { FastifyInstance } from 'fastify';
import type { HttpApiDeps } from './http-api.ts';

export function registerExecRoutes(_api: FastifyInstance, _deps: HttpApiDeps): void {}
