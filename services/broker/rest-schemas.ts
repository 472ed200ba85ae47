// The REST API's request and response schemas, built from the same TypeBox declarations as the frames
// (services/protocol/messages.ts), the validator that checks requests with them, and the OpenAPI document's
// frame. @fastify/swagger reads the route schemas to publish GET /api/v1/openapi.json; docs/api.md is rendered
// from that document (npm run docs:api).
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import fastJsonStringify from 'fast-json-stringify';
import { Value } from '@sinclair/typebox/value';
import type { FastifySchema, FastifySchemaCompiler } from 'fastify';
import { describeError } from '../protocol/frame-parser.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { ACTION_NAMES, ActionOutcome, Inventory, Status } from '../protocol/gateway-reports.ts';
import { GatewayRecord, Identifier, JsonValue, NodeRecord, WriteResult } from '../protocol/messages.ts';

/** Every error answer: a stable code (docs/errors.md) and a sentence. */
export const ErrorBody = Type.Object(
  {
    error: Type.String({ description: 'a stable code, e.g. MYC_ERR_BAD_SHAPE (docs/errors.md)' }),
    message: Type.String(),
  },
  { title: 'Error' },
);

const NodeParams = Type.Object({ uid: Identifier });
const ResourceParams = Type.Object({ uid: Identifier, name: Identifier });

export const Health = Type.Object({
  status: Type.Literal('ok'),
  broker: Type.String(),
  bus: Type.Union([Type.Literal('memory'), Type.Literal('nats')]),
  gateways: Type.Integer({ minimum: 0, description: 'gateways connected to this broker' }),
  nodes: Type.Integer({ minimum: 0 }),
});

export const WriteAnswer = Type.Object({
  uid: Type.String(),
  endpoint: Type.String(),
  result: WriteResult,
  reason: Type.Optional(Type.String()),
});
export type WriteAnswer = Static<typeof WriteAnswer>;

/**
 * GET /gateways/:id. As a response schema it also means only these fields are ever serialized, whatever a report
 * held (defence in depth: the broker already copies only the known fields).
 */
export const GatewayDetail = Type.Object(
  {
    id: Type.String(),
    broker: Type.Optional(Type.String()),
    connectedAt: Type.Optional(Type.Number()),
    nodes: Type.Optional(Type.Integer({ minimum: 0 })),
    inventory: Type.Union([Inventory, Type.Null()]),
    status: Type.Union([Status, Type.Null()]),
    history: Type.Array(
      Type.Object({ at: Type.Number(), in: Type.Number(), out: Type.Number(), errors: Type.Number() }),
      { description: 'the last status reports, oldest first: totals of messages in, out and errors' },
    ),
  },
  { title: 'GatewayDetail' },
);

export const ActionAnswer = Type.Object(
  { id: Type.String({ description: 'the gateway' }), ...ActionOutcome.properties },
  { title: 'ActionAnswer' },
);

const GatewayParams = Type.Object({ id: Identifier });
const ActionParams = Type.Object({
  id: Identifier,
  name: Type.String({ minLength: 1, maxLength: 64, description: ACTION_NAMES.join(', ') }),
});

const Removed = Type.Object({ uid: Type.String(), removed: Type.Literal(true) });

/** Error answers a route may give, by status, with what each means there. */
export function errors(described: Record<number, string>): Record<number, TSchema> {
  const out: Record<number, TSchema> = {};
  for (const [status, description] of Object.entries(described)) out[Number(status)] = { ...ErrorBody, description };
  return out;
}

export const AUTH_ERRORS = { 401: 'token missing, invalid, expired, revoked or of a role that may not read' };
const NO_SECURITY: Array<Record<string, string[]>> = [];

/** The schema of each route, by method and URL (the URL as registered, under the /api/v1 prefix or not). */
export const routeSchemas = {
  health: {
    summary: 'Liveness: the broker, its bus and what it holds',
    tags: ['operations'],
    security: NO_SECURITY,
    response: { 200: { ...Health, description: 'the broker is up' } },
  },
  metrics: {
    summary: 'Prometheus metrics (text exposition format 0.0.4)',
    description: 'Needs a token with a reading role unless the broker runs with --public-metrics.',
    tags: ['operations'],
    produces: ['text/plain'],
    response: { 200: Type.String({ description: 'Prometheus text format' }), ...errors(AUTH_ERRORS) },
  },
  listNodes: {
    summary: 'Every node the broker knows, online and offline',
    tags: ['nodes'],
    response: { 200: Type.Array(NodeRecord, { description: 'every node' }), ...errors(AUTH_ERRORS) },
  },
  getNode: {
    summary: 'One node',
    tags: ['nodes'],
    params: NodeParams,
    response: {
      200: { ...NodeRecord, description: 'the node' },
      ...errors({ ...AUTH_ERRORS, 400: 'the uid breaks the identifier rule', 404: 'no node with this uid' }),
    },
  },
  removeNode: {
    summary: 'Remove a node from every broker and release its uid (operator, admin)',
    description:
      'Clients get `out` with reason `removed`; the next gateway to announce the uid holds it (docs/architecture.md, "Node ownership").',
    tags: ['nodes'],
    params: NodeParams,
    response: {
      200: { ...Removed, description: 'removed from every broker; the uid is free' },
      ...errors({
        ...AUTH_ERRORS,
        400: 'the uid breaks the identifier rule',
        403: 'the role may not remove nodes (viewer)',
        404: 'no broker knows the node and nobody holds the uid',
        503: 'the node ownership store (JetStream) did not answer; retry',
      }),
    },
  },
  writeResource: {
    summary: "Write a value to a node's resource (operator, admin)",
    description:
      'The body is the payload: any JSON value (`application/json`) or a string (`text/plain`). 200 for `ok` and `delivered`, 502 for `error`, 504 for `timeout`.',
    tags: ['nodes'],
    params: ResourceParams,
    body: JsonValue,
    consumes: ['application/json', 'text/plain'],
    response: {
      200: { ...WriteAnswer, description: 'the node confirmed (`ok`) or the write was handed over (`delivered`)' },
      502: { ...WriteAnswer, description: 'the gateway or node reported an error' },
      504: { ...WriteAnswer, description: 'no result within the write timeout' },
      ...errors({
        ...AUTH_ERRORS,
        400: 'a uid or resource name that breaks the identifier rule, an empty body, invalid JSON or JSON nested deeper than 32 levels',
        403: 'the role may not write (viewer)',
        404: 'no node with this uid',
        409: 'the node is offline',
        413: 'the body is larger than --max-frame-bytes',
      }),
    },
  },
  listGateways: {
    summary: 'Gateways connected to this broker and to its peers',
    tags: ['gateways'],
    response: { 200: Type.Array(GatewayRecord, { description: 'every gateway' }), ...errors(AUTH_ERRORS) },
  },
  getGateway: {
    summary: 'One gateway: its inventory, last status report and a short history of its counts',
    tags: ['gateways'],
    params: GatewayParams,
    response: {
      200: { ...GatewayDetail, description: 'the gateway (inventory and status null until it reported them)' },
      ...errors({
        ...AUTH_ERRORS,
        400: 'the id breaks the identifier rule',
        404: 'no broker knows the gateway',
      }),
    },
  },
  gatewayAction: {
    summary: 'Ask a gateway to act: rediscover, forget, set-log-level (operator, admin)',
    description:
      'The body is the action\'s arguments as a JSON object: `{"uid"}` (optional) for rediscover, `{"uid"}` for forget, `{"level": "debug"|"info"|"warn"|"error"}` for set-log-level; unknown keys are refused. 200 for `ok`, 502 for `error`, 503 when the gateway is on no broker, 504 when it did not answer in time.',
    tags: ['gateways'],
    params: ActionParams,
    response: {
      200: { ...ActionAnswer, description: 'the gateway did it' },
      502: { ...ActionAnswer, description: 'the gateway tried and failed (`reason`)' },
      503: { ...ActionAnswer, description: 'the gateway is not connected to any broker' },
      504: { ...ActionAnswer, description: 'no result within the action timeout' },
      ...errors({
        ...AUTH_ERRORS,
        400: 'an id that breaks the identifier rule, an unknown action (MYC_ERR_UNKNOWN_ACTION) or arguments that do not fit it',
        403: 'the role may not act on gateways (viewer)',
        404: 'no broker knows the gateway',
      }),
    },
  },
  openapi: {
    summary: 'This API described as OpenAPI 3.0',
    tags: ['operations'],
    response: { 200: Type.Unknown({ description: 'an OpenAPI 3.0 document' }), ...errors(AUTH_ERRORS) },
  },
} satisfies Record<string, FastifySchema & { summary: string; tags: string[] }>;

/**
 * Fastify's validator: the route's TypeBox schema compiled once (TypeCompiler, as for frames), so a REST body is
 * held to exactly the rules a frame is. Params and query strings arrive as text and are converted to the
 * schema's types first (what fastify's Ajv default does). A failure is a 400 MYC_ERR_BAD_SHAPE naming the field.
 */
export const typeBoxValidator: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  // Compiled on the route's first request, not at start: some forty routes' checks compiled up front were a
  // visible part of the broker's start-up (docs/benchmarks.md, "Start-up").
  let checker: ReturnType<typeof TypeCompiler.Compile> | undefined;
  const convert = httpPart === 'params' || httpPart === 'querystring' || httpPart === 'headers';
  return (data: unknown) => {
    checker ??= TypeCompiler.Compile(schema);
    const compiled = checker;
    // Only converted parts are handed back: a body is left as parsed (an absent body stays absent).
    const value = convert ? Value.Convert(schema, data) : data;
    if (compiled.Check(value)) return convert ? { value } : true;
    const error = new MyceliumError(ErrorCode.BadShape, `${httpPart} ${describeError(compiled.Errors(value).First())}`);
    return { error: Object.assign(error, { statusCode: 400 }) };
  };
};

/**
 * Fastify's response serializers (fast-json-stringify, what fastify uses by default), each built on the first
 * response it serializes instead of all at start: building them was a fifth of the broker's start-up CPU.
 */
export function lazySerializer({ schema }: { schema: unknown }): (data: unknown) => string {
  let stringify: ((data: unknown) => string) | undefined;
  return (data) => {
    stringify ??= fastJsonStringify(schema as Parameters<typeof fastJsonStringify>[0]) as (data: unknown) => string;
    return stringify(data);
  };
}

/** The OpenAPI document's frame; @fastify/swagger adds a path per route from its schema. */
export function openApiOptions(version: string) {
  return {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Mycelium broker REST API',
        version,
        description:
          'The REST side of the Mycelium broker. Every route needs a bearer token (an EdDSA JWT made by `mycelium token`) with role viewer, operator or admin, except /healthz (and /metrics with --public-metrics). Errors are `{error, message}` with a stable code from docs/errors.md.',
      },
      components: {
        securitySchemes: { bearer: { type: 'http' as const, scheme: 'bearer', bearerFormat: 'JWT' } },
      },
      security: [{ bearer: [] }],
      tags: [
        { name: 'nodes', description: 'nodes and their resources' },
        { name: 'gateways', description: 'gateway connections' },
        { name: 'operations', description: 'health, metrics and this description' },
      ],
    },
  };
}
