import type { OptionTable } from '../common/config.ts';
import { httpEndpointOptions } from '../common/http-endpoint.ts';
import { tokenPolicyOptions } from '../common/token-policy.ts';

/** The history's /metrics and /healthz port: the next in the gateways' block (docs/operations.md, Ports). */
export const HISTORY_HTTP_PORT = 9184;

export const historyOptions = {
  db: {
    type: 'string',
    description:
      'where history is stored: sqlite:<path> (embedded, the default: history.db beside the keys) or postgres://…',
  },
  natsUrl: {
    type: 'string',
    description: 'NATS server URL(s), comma-separated; needs JetStream (events wait there while history is down)',
  },
  retention: {
    type: 'string',
    default: '30d',
    description: 'how long values and events are kept (per-resource retentionMs overrides it): 90m, 12h, 30d',
  },
  durable: {
    type: 'string',
    default: 'history',
    description: 'JetStream consumer name: history workers with the same name share the stream',
  },
  batch: { type: 'number', default: 500, min: 1, description: 'most events stored in one transaction' },
  maxPending: {
    type: 'number',
    default: 20_000,
    min: 1,
    description: 'events waiting for the store at most (in-process: more are dropped and counted; NATS: held)',
  },
  ackWaitMs: {
    type: 'number',
    default: 30_000,
    min: 100,
    description: 'NATS: events a crashed worker held are delivered again after this',
  },
  retryMs: {
    type: 'number',
    default: 1_000,
    min: 10,
    description: 'pause before a batch the store refused (disk full, database gone) is tried again',
  },
  streamMaxAge: {
    type: 'string',
    default: '7d',
    description: 'NATS: how long the stream keeps events nobody stored yet (a history down longer loses them)',
  },
  pruneIntervalMs: {
    type: 'number',
    default: 60_000,
    min: 10,
    description: 'how often values beyond their retention or maxHistory are deleted',
  },
  pruneBudget: {
    type: 'number',
    default: 5_000,
    min: 1,
    description: 'rows deleted per pruning step (ingestion runs between steps)',
  },
  keyFile: {
    type: 'string',
    description: 'key file whose public half verifies /metrics tokens (default ~/.mycelium/key.pem)',
  },
  ...httpEndpointOptions(HISTORY_HTTP_PORT),
  ...tokenPolicyOptions,
} as const satisfies OptionTable;

export const exportOptions = {
  db: historyOptions.db,
  node: { type: 'string', description: 'the node uid', env: false },
  resource: { type: 'string', description: 'the resource name', env: false },
  from: {
    type: 'string',
    description: 'start (inclusive): ISO 8601 or epoch ms (default: a day before --to)',
    env: false,
  },
  to: { type: 'string', description: 'end (exclusive): ISO 8601 or epoch ms (default: now)', env: false },
} as const satisfies OptionTable;
