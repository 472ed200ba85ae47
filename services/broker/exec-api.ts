// [console] REST for the device console (issue 12), registered inside the authenticated /api/v1 scope:
// POST /nodes/:uid/exec (NDJSON, or one JSON result with ?wait=true), POST /exec (many nodes), GET /audit (admin).
// The same router and checks as the WebSocket frames (exec-router.ts); a client that goes away cancels its
// requests.
import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Static } from '@sinclair/typebox';
import type { AuditLog } from '../console/audit.ts';
import {
  CONSOLE_RESOURCE,
  type ExecExit,
  type ExecFrame,
  type ExecOutput,
  type RequesterRole,
} from '../protocol/console-messages.ts';
import { ErrorCode } from '../protocol/errors.ts';
import type { NodeRecord } from '../protocol/messages.ts';
import { stringifySafe } from '../protocol/schema.ts';
import type { ExecBody, ManyExecBody } from './exec-schemas.ts';
import { execRouteSchemas } from './exec-schemas.ts';
import type { ExecHandle, ExecRouter } from './exec-router.ts';
import type { BrokerCounters } from './ports.ts';

export interface ExecApiDeps {
  counters: Pick<BrokerCounters, 'rejected'>;
  table: { get(uid: string): NodeRecord | undefined; all(): IterableIterator<NodeRecord> };
  exec?: Pick<ExecRouter, 'request'>;
  audit?: Pick<AuditLog, 'tail'>;
}

type Body = Static<typeof ExecBody>;

function problem(reply: FastifyReply, status: number, code: string, message: string) {
  return reply.code(status).send({ error: code, message });
}

/** Why the role may not send this body at all (403), before any node is asked. */
function forbidden(role: string, body: Body): string | undefined {
  if (role !== 'operator' && role !== 'admin') return `role ${role} may not exec`;
  if (body.shell !== undefined && role !== 'admin') return 'shell needs role admin';
  return undefined;
}

function frameOf(id: string, uid: string, body: Body): ExecFrame {
  return {
    type: 'exec',
    id,
    uid,
    ...(body.command === undefined ? {} : { command: body.command }),
    ...(body.shell === undefined ? {} : { shell: body.shell }),
    ...(body.params === undefined ? {} : { params: body.params }),
    ...(body.mode === undefined ? {} : { mode: body.mode }),
    ...(body.timeoutMs === undefined ? {} : { timeoutMs: body.timeoutMs }),
  };
}

/** An NDJSON answer: one JSON object per line, flushed as it comes. */
function ndjson(reply: FastifyReply): PassThrough {
  const stream = new PassThrough();
  reply.code(200).type('application/x-ndjson').header('cache-control', 'no-store').send(stream);
  return stream;
}

function line(stream: PassThrough, value: object): void {
  const text = stringifySafe(value);
  if (text !== undefined && !stream.destroyed) stream.write(`${text}\n`);
}

/** Calls `fn` when the client goes away before the answer is complete (its requests are cancelled). */
function onGone(reply: FastifyReply, fn: () => void): void {
  // A command may stay silent longer than the server's idle timeout (--handshake-timeout-ms): this answer is
  // bounded by the request's timeout instead.
  reply.raw.socket?.setTimeout(0);
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) fn();
  });
}

export function registerExecRoutes(api: FastifyInstance, deps: ExecApiDeps): void {
  // Looked up per request: the OpenAPI description registers these routes without a router.
  const router = (): Pick<ExecRouter, 'request'> => {
    if (deps.exec === undefined) throw new Error('no exec router');
    return deps.exec;
  };
  const requesterOf = (req: FastifyRequest) => {
    const claims = req.claims as { sub: string; role: string };
    return { sub: claims.sub, role: claims.role as RequesterRole };
  };

  api.post<{ Params: { uid: string }; Querystring: { wait?: boolean }; Body: Body }>(
    '/nodes/:uid/exec',
    { schema: execRouteSchemas.execOnNode },
    async (req, reply) => {
      const { uid } = req.params;
      const requester = requesterOf(req);
      const refusal = forbidden(requester.role, req.body);
      if (refusal !== undefined) {
        // Through the router all the same, so the refusal is audited like every request.
        await router().request(requester, frameOf('rest', uid, req.body), 'rest', () => undefined).done;
        return problem(reply, 403, ErrorCode.Forbidden, refusal);
      }
      const node = deps.table.get(uid);
      if (node === undefined || node.status === 'offline') {
        await router().request(requester, frameOf('rest', uid, req.body), 'rest', () => undefined).done;
        if (node === undefined) return problem(reply, 404, ErrorCode.UnknownNode, `no node ${uid}`);
        return problem(reply, 409, ErrorCode.NodeOffline, `node ${uid} is offline`);
      }
      const id = 'rest';
      const exec = router();
      if (req.query.wait === true) {
        const out = { stdout: '', stderr: '' };
        const handle = exec.request(requester, frameOf(id, uid, req.body), 'rest', (f) => {
          if (f.stream !== 'pty') out[f.stream] += f.data;
        });
        onGone(reply, () => handle.cancel());
        const exit = await handle.done;
        const { type: _t, id: _i, ...rest } = exit;
        return reply.code(200).send({ uid, ...rest, ...out });
      }
      const stream = ndjson(reply);
      const handle = exec.request(requester, frameOf(id, uid, req.body), 'rest', (f) => line(stream, f));
      onGone(reply, () => handle.cancel());
      handle.done.then(
        (exit) => {
          line(stream, exit);
          stream.end();
        },
        () => stream.end(),
      );
      return reply;
    },
  );

  api.post<{ Body: Static<typeof ManyExecBody> }>(
    '/exec',
    { schema: execRouteSchemas.execOnNodes },
    async (req, reply) => {
      const { nodes, filter, ...body } = req.body;
      const requester = requesterOf(req);
      const refusal = forbidden(requester.role, body);
      if (refusal !== undefined) {
        deps.counters.rejected('forbidden-exec').inc();
        return problem(reply, 403, ErrorCode.Forbidden, refusal);
      }
      if ((nodes === undefined) === (filter === undefined)) {
        return problem(reply, 400, ErrorCode.BadShape, 'give either nodes or filter');
      }
      let uids: string[];
      if (nodes !== undefined) uids = nodes;
      else {
        uids = [];
        for (const n of deps.table.all()) {
          if (n.status !== 'online' || n.resources[CONSOLE_RESOURCE] === undefined) continue;
          if (filter?.uidPrefix !== undefined && !n.uid.startsWith(filter.uidPrefix)) continue;
          if (filter?.gateway !== undefined && n.gateway !== filter.gateway) continue;
          uids.push(n.uid);
        }
      }
      const exec = router();
      const stream = ndjson(reply);
      const handles: ExecHandle[] = [];
      onGone(reply, () => {
        for (const h of handles) h.cancel();
      });
      const onOutput = (uid: string) => (f: ExecOutput) => line(stream, { ...f, uid });
      const all = uids.map((uid, i) => {
        const handle = exec.request(requester, frameOf(`n${i}`, uid, body), 'rest', onOutput(uid));
        handles.push(handle);
        return handle.done.then((exit: ExecExit) => line(stream, { ...exit, uid }));
      });
      Promise.all(all).then(
        () => stream.end(),
        () => stream.end(),
      );
      return reply;
    },
  );

  api.get<{ Querystring: { limit?: number } }>('/audit', { schema: execRouteSchemas.audit }, async (req, reply) => {
    const role = requesterOf(req).role;
    if (role !== 'admin') {
      deps.counters.rejected('forbidden-audit').inc();
      return problem(reply, 403, ErrorCode.Forbidden, `role ${role} may not read the audit log`);
    }
    return (await deps.audit?.tail(req.query.limit ?? 100)) ?? [];
  });
}
