// [console] The console's REST schemas (issue 12), in rest-schemas.ts's style: the bodies are the exec frame's
// fields (console-messages.ts), so a REST request is held to exactly the rules a frame is.
import { Type } from '@sinclair/typebox';
import {
  CommandName,
  ExecExit,
  ExecMode,
  ExecParams,
  MAX_SHELL_LENGTH,
  MAX_TIMEOUT_MS,
} from '../protocol/console-messages.ts';
import { Identifier } from '../protocol/messages.ts';
import { AUTH_ERRORS, errors } from './rest-schemas.ts';

/** Most nodes one POST /exec may address. */
export const MAX_EXEC_NODES = 10_000;

const ExecFields = {
  command: Type.Optional(CommandName),
  shell: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_SHELL_LENGTH, pattern: '^[^\\u0000]*$' })),
  params: Type.Optional(ExecParams),
  mode: Type.Optional(ExecMode),
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TIMEOUT_MS })),
};

export const ExecBody = Type.Object(ExecFields, { additionalProperties: false, title: 'ExecRequest' });

export const ManyExecBody = Type.Object(
  {
    ...ExecFields,
    nodes: Type.Optional(Type.Array(Identifier, { maxItems: MAX_EXEC_NODES, uniqueItems: true })),
    filter: Type.Optional(
      Type.Object(
        {
          uidPrefix: Type.Optional(Type.String({ maxLength: 256 })),
          gateway: Type.Optional(Identifier),
        },
        { additionalProperties: false, description: 'every online node with a console that matches' },
      ),
    ),
  },
  { additionalProperties: false, title: 'ManyExecRequest' },
);

/** ?wait=true: the whole result at once. */
export const ExecResult = Type.Object(
  {
    uid: Type.String(),
    ...ExecExit.properties,
    stdout: Type.String(),
    stderr: Type.String(),
  },
  { title: 'ExecResult' },
);

const AuditRecordSchema = Type.Object(
  {
    time: Type.String(),
    sub: Type.String(),
    role: Type.String(),
    node: Type.String(),
    kind: Type.String(),
    command: Type.Optional(Type.String()),
    shell: Type.Optional(Type.String()),
    params: Type.Optional(Type.Record(Type.String(), Type.String())),
    mode: Type.Optional(Type.String()),
    status: Type.String(),
    code: Type.Union([Type.Integer(), Type.Null()]),
    signal: Type.Union([Type.String(), Type.Null()]),
    durationMs: Type.Number(),
    bytes: Type.Integer(),
    truncated: Type.Boolean(),
    reason: Type.Optional(Type.String()),
    broker: Type.String(),
    via: Type.String(),
  },
  { title: 'AuditRecord' },
);

const EXEC_DESCRIPTION =
  'The body names an allowed `command` with `params`, or (admin, agent started with --allow-shell) a `shell` line; `mode` output | ok-ng | no-return; `timeoutMs`. The answer is NDJSON (`application/x-ndjson`): `exec-output` frames as they come, then one `exec-exit` (docs/protocol.md, "Device console"). With `?wait=true`, one JSON `ExecResult` with the output gathered. A request the agent refuses still answers 200 with status `refused` and the reason.';

export const execRouteSchemas = {
  execOnNode: {
    summary: 'Run a command on a node (operator: allowed commands; admin: also shell lines)',
    description: EXEC_DESCRIPTION,
    tags: ['console'],
    params: Type.Object({ uid: Identifier }),
    querystring: Type.Object({ wait: Type.Optional(Type.Boolean({ description: 'one JSON result at the end' })) }),
    body: ExecBody,
    produces: ['application/x-ndjson', 'application/json'],
    response: {
      ...errors({
        ...AUTH_ERRORS,
        400: 'a body that breaks the exec rules (MYC_ERR_BAD_SHAPE)',
        403: 'a viewer, or an operator asking for a shell line (MYC_ERR_FORBIDDEN)',
        404: 'no such node (MYC_ERR_UNKNOWN_NODE)',
        409: 'the node is offline (MYC_ERR_NODE_OFFLINE)',
      }),
    },
  },
  execOnNodes: {
    summary: "Run one command on many nodes (a list or a filter); streams each node's result",
    description:
      'Like POST /nodes/:uid/exec for every node named in `nodes`, or every online node with a console matching `filter` (`uidPrefix`, `gateway`). NDJSON: every frame carries `uid`; each node ends with its `exec-exit`, and the stream ends once all have. Nodes unknown or offline get an `exec-exit` with status `error`.',
    tags: ['console'],
    body: ManyExecBody,
    produces: ['application/x-ndjson'],
    response: {
      ...errors({
        ...AUTH_ERRORS,
        400: 'neither or both of nodes and filter, or a bad body (MYC_ERR_BAD_SHAPE)',
        403: 'a viewer, or an operator asking for a shell line (MYC_ERR_FORBIDDEN)',
      }),
    },
  },
  audit: {
    summary: 'The console audit log, newest last (admin)',
    description:
      'Every console request this broker took, refused ones too: the last `limit` (default 100, at most 1000).',
    tags: ['console'],
    querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }),
    response: {
      200: Type.Array(AuditRecordSchema),
      ...errors({ ...AUTH_ERRORS, 403: 'the role is not admin (MYC_ERR_FORBIDDEN)' }),
    },
  },
};
