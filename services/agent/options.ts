// `mycelium agent` options (issue 12). Flag > environment (MYCELIUM_…) > config file > default, like every service.
import type { ConfigOf, OptionTable } from '../common/config.ts';
import { pinOptions } from './pin.ts';
import { RUNNER_DEFAULTS } from './runner.ts';

export const agentOptions = {
  gatewayUrl: {
    type: 'string',
    default: 'ws://localhost:8001/node',
    description: 'the WebSocket gateway to dial (the agent never listens)',
  },
  token: { type: 'string', description: "the node token (role node; its subject is the node's uid)" },
  tokenFile: { type: 'string', description: 'read the node token from this file (must not be readable by others)' },
  ...pinOptions, // [accounts] provisioning by PIN (issue 15)
  commands: { type: 'string', description: 'commands.yaml: the commands this device allows (none without it)' },
  allowShell: {
    type: 'boolean',
    default: false,
    description: 'run raw shell lines (sh -c) for requesters with role admin',
  },
  allowPty: {
    type: 'boolean',
    default: false,
    description: 'open interactive terminals for requesters with role admin',
  },
  statusInterval: { type: 'number', default: 60, min: 1, description: 'seconds between status reports' },
  maxConcurrent: {
    type: 'number',
    default: RUNNER_DEFAULTS.maxConcurrent,
    min: 1,
    description: 'commands (and terminals) running at once; more are answered busy',
  },
  maxOutputBytes: {
    type: 'number',
    default: RUNNER_DEFAULTS.maxOutputBytes,
    min: 1,
    description: 'bytes of output kept per command; beyond, it is dropped and the exit says truncated',
  },
  defaultTimeoutMs: {
    type: 'number',
    default: RUNNER_DEFAULTS.defaultTimeoutMs,
    min: 1,
    description: 'timeout of a request that names none (the command file may set one per command)',
  },
  maxTimeoutMs: {
    type: 'number',
    default: RUNNER_DEFAULTS.maxTimeoutMs,
    min: 1,
    description: 'no request runs longer, whatever it asks',
  },
  killGraceMs: {
    type: 'number',
    default: RUNNER_DEFAULTS.killGraceMs,
    min: 0,
    description: "between TERM and KILL to a timed-out or cancelled command's process group",
  },
  backoffInitialMs: { type: 'number', default: 500, min: 1, description: 'first reconnect delay' },
  backoffMaxMs: { type: 'number', default: 30_000, min: 1, description: 'longest reconnect delay (full jitter)' },
  maxQueuedFrames: {
    type: 'number',
    default: 1000,
    min: 1,
    description: 'answers kept while the gateway is unreachable (exits first; output beyond is dropped)',
  },
  diskPath: { type: 'string', default: '/', description: 'the file system whose free space is reported' },
} as const satisfies OptionTable;

export type AgentConfig = ConfigOf<typeof agentOptions>;
