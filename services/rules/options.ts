import type { OptionTable } from '../common/config.ts';
import { httpEndpointOptions } from '../common/http-endpoint.ts';
import { tokenPolicyOptions } from '../common/token-policy.ts';

/** The rules service's /metrics and /healthz port: the next after the history's (docs/operations.md, Ports). */
export const RULES_HTTP_PORT = 9185;

// The endpoint's --http-timeout-ms would collide with ctx.http's own --http-timeout-ms (older, and a rule
// author's setting): the endpoint's request deadline is --metrics-timeout-ms here instead.
const { httpTimeoutMs: endpointTimeout, ...endpointOptions } = httpEndpointOptions(RULES_HTTP_PORT);

export const rulesOptions = {
  dir: { type: 'string', default: 'rules', description: 'the folder of rule files (.ts, .js; not its subfolders)' },
  natsUrl: {
    type: 'string',
    description: 'NATS server URL(s), comma-separated; several rules workers share the nodes',
  },
  stateDir: {
    type: 'string',
    description: 'where rules keep their ctx.state and the disabled list (default: rules-state beside the keys)',
  },
  workerId: { type: 'string', description: 'this worker’s id on the bus (default: host-pid-random)' },
  gatewayId: { type: 'string', default: 'rules', description: 'the gateway id of the virtual nodes rules emit on' },
  timeLimitMs: { type: 'number', default: 100, min: 1, description: 'CPU time one rule invocation may use' },
  maxTimeLimitMs: {
    type: 'number',
    default: 5000,
    min: 1,
    description: 'the most a rule may ask for with its own timeLimitMs',
  },
  memoryMb: {
    type: 'number',
    default: 64,
    min: 8,
    description: 'heap limit of each rules thread (MB); a thread holds several rules unless --threads 0',
  },
  threads: {
    type: 'number',
    min: 0,
    description: 'threads the rules share (default: one per core); 0 gives each rule a thread of its own',
  },
  maxWaitMs: {
    type: 'number',
    default: 30_000,
    min: 10,
    description: 'wall time one invocation may take, awaited I/O included',
  },
  loadTimeoutMs: { type: 'number', default: 5000, min: 10, description: 'time a rule file has to load' },
  concurrency: {
    type: 'number',
    default: 16,
    min: 1,
    description: 'invocations of one rule in flight at once (different nodes; one node’s events stay in order)',
  },
  maxQueued: { type: 'number', default: 10_000, min: 1, description: 'events waiting for one rule (more are dropped)' },
  maxFailures: { type: 'number', default: 5, min: 1, description: 'failures in a row after which a rule is disabled' },
  httpAllow: { type: 'list', default: [], description: 'hosts ctx.http may call: host, host:port or *.domain' },
  httpTimeoutMs: { type: 'number', default: 10_000, min: 1, description: 'longest ctx.http request' },
  writeTimeoutMs: { type: 'number', default: 5000, min: 1, description: 'longest wait for a ctx.write result' },
  historyTimeoutMs: { type: 'number', default: 10_000, min: 1, description: 'longest wait for a ctx.history answer' },
  execRole: {
    type: 'string',
    default: 'operator',
    description:
      'the role console commands of rules run as: operator (commands only) or admin (the agent may allow shell)',
  },
  stateSyncMs: { type: 'number', default: 500, min: 0, description: 'window to gather the brokers’ nodes at start' },
  heartbeatMs: { type: 'number', default: 1000, min: 10, description: 'rules workers announce themselves this often' },
  reloadDebounceMs: {
    type: 'number',
    default: 100,
    min: 0,
    description: 'quiet time after a file change before reload',
  },
  maxVirtualNodes: { type: 'number', default: 1000, min: 0, description: 'virtual nodes rules may emit on' },
  recentRuns: { type: 'number', default: 20, min: 1, description: 'runs kept per rule for the API and the dashboard' },
  keyFile: {
    type: 'string',
    description: 'key file whose public half verifies /metrics tokens (default ~/.mycelium/key.pem)',
  },
  ...endpointOptions,
  metricsTimeoutMs: {
    ...endpointTimeout,
    description: 'time a connection to the /metrics port has to send its request',
  },
  ...tokenPolicyOptions,
} as const satisfies OptionTable;

export const checkOptions = {
  dir: { type: 'string', description: 'the folder to check (or give it as the first argument)', env: false },
} as const satisfies OptionTable;
