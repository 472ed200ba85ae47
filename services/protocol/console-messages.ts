// The device console's frames (issue 12): one frame set on every link (client ⇄ broker ⇄ gateway ⇄ node). Each hop
// keeps its own request ids and maps them back, so an id is only unique on its link; the sender of `exec` picks it.
// No I/O, no logging: the dashboard imports it too. Documented in docs/protocol.md, "Device console".
import { Null, type Static } from '@sinclair/typebox';
import { Identifier, OneOf, Type } from './schema-parts.ts';

/** Most parameters one command may take, and the longest value of one. */
export const MAX_EXEC_PARAMS = 16;
export const MAX_PARAM_VALUE_LENGTH = 1024;
/** Longest raw shell command (admin, agent started with --allow-shell). */
export const MAX_SHELL_LENGTH = 4096;
/** Longest text of one exec-output chunk or pty-input (UTF-16 code units). */
export const MAX_CHUNK_LENGTH = 64 * 1024;
/** Longest timeout a request may ask for (the agent applies its own cap on top). */
export const MAX_TIMEOUT_MS = 24 * 3600 * 1000;
/** Largest terminal a PTY may be opened or resized to. */
export const MAX_PTY_SIZE = 1000;

/** Command names: what a commands.yaml key may be. */
export const COMMAND_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';
/** Parameter names: `{host}` in an argv template. Never `__proto__` (it does not match). */
export const PARAM_NAME_PATTERN = '^[A-Za-z][A-Za-z0-9_]{0,31}$';

export const CommandName = Type.String({ pattern: COMMAND_NAME_PATTERN, description: 'a command the agent allows' });

/** `output`: stream stdout/stderr; `ok-ng`: only success or failure; `no-return`: start and forget (audited). */
export const EXEC_MODES = ['output', 'ok-ng', 'no-return'] as const;
export const ExecMode = OneOf(EXEC_MODES, 'output: stream; ok-ng: only the outcome; no-return: start and forget');
export type ExecMode = Static<typeof ExecMode>;

export const EXEC_STATUSES = ['ok', 'ng', 'error', 'timeout', 'cancelled', 'refused', 'busy'] as const;
export const ExecStatus = OneOf(EXEC_STATUSES);
export type ExecStatus = Static<typeof ExecStatus>;

export const EXEC_STREAMS = ['stdout', 'stderr', 'pty'] as const;
export const ExecStream = OneOf(EXEC_STREAMS);
export type ExecStream = Static<typeof ExecStream>;

/** The roles a requester may have (only people and services acting for them run commands). */
export const REQUESTER_ROLES = ['viewer', 'operator', 'admin'] as const;
export const RequesterRole = OneOf(REQUESTER_ROLES);
export type RequesterRole = Static<typeof RequesterRole>;

/** Who asked: added by the broker on the gateway and node hops (the agent checks the role again). */
export const Requester = Type.Object({ sub: Type.String({ maxLength: 256 }), role: RequesterRole });
export type Requester = Static<typeof Requester>;

export const ExecParams = Type.Record(
  Type.String({ pattern: PARAM_NAME_PATTERN }),
  Type.String({ maxLength: MAX_PARAM_VALUE_LENGTH }),
  { additionalProperties: false, maxProperties: MAX_EXEC_PARAMS },
);
export type ExecParams = Static<typeof ExecParams>;

/** Run an allowed `command` (with `params`) or, admin only, a `shell` command line, on node `uid`. */
export const ExecFrame = Type.Object({
  type: Type.Literal('exec'),
  id: Identifier,
  uid: Identifier,
  command: Type.Optional(CommandName),
  // NUL cannot travel in an argv; everything else (newlines, tabs) is a shell's business.
  shell: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_SHELL_LENGTH, pattern: '^[^\\u0000]*$' })),
  params: Type.Optional(ExecParams),
  mode: Type.Optional(ExecMode),
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TIMEOUT_MS })),
  requester: Type.Optional(Requester),
});
export type ExecFrame = Static<typeof ExecFrame>;

/** Cancel an exec (its process group gets TERM, then KILL) or close a PTY. */
export const ExecCancel = Type.Object({ type: Type.Literal('exec-cancel'), id: Identifier });
export type ExecCancel = Static<typeof ExecCancel>;

const PtySize = {
  cols: Type.Integer({ minimum: 1, maximum: MAX_PTY_SIZE }),
  rows: Type.Integer({ minimum: 1, maximum: MAX_PTY_SIZE }),
};
export const PtyOpen = Type.Object({
  type: Type.Literal('pty-open'),
  id: Identifier,
  uid: Identifier,
  ...PtySize,
  requester: Type.Optional(Requester),
});
export type PtyOpen = Static<typeof PtyOpen>;
export const PtyInput = Type.Object({
  type: Type.Literal('pty-input'),
  id: Identifier,
  data: Type.String({ maxLength: MAX_CHUNK_LENGTH }),
});
export type PtyInput = Static<typeof PtyInput>;
export const PtyResize = Type.Object({ type: Type.Literal('pty-resize'), id: Identifier, ...PtySize });
export type PtyResize = Static<typeof PtyResize>;

/** A chunk of output, in order (`seq` from 0). Text is UTF-8 decoded, invalid bytes replaced. */
export const ExecOutput = Type.Object({
  type: Type.Literal('exec-output'),
  id: Identifier,
  seq: Type.Integer({ minimum: 0 }),
  stream: ExecStream,
  data: Type.String({ maxLength: MAX_CHUNK_LENGTH }),
});
export type ExecOutput = Static<typeof ExecOutput>;

/** The end of an exec (or PTY). `reason` says why for refused/error/busy. */
export const ExecExit = Type.Object({
  type: Type.Literal('exec-exit'),
  id: Identifier,
  status: ExecStatus,
  code: Type.Union([Type.Integer(), Null()]),
  signal: Type.Union([Type.String({ maxLength: 32 }), Null()]),
  truncated: Type.Boolean(),
  durationMs: Type.Number({ minimum: 0 }),
  bytes: Type.Integer({ minimum: 0 }),
  reason: Type.Optional(Type.String({ maxLength: 256 })),
});
export type ExecExit = Static<typeof ExecExit>;

/** Requests, client → broker → gateway → node. */
export type ExecRequestFrame = ExecFrame | ExecCancel | PtyOpen | PtyInput | PtyResize;
export const execRequestFrames = {
  exec: ExecFrame,
  'exec-cancel': ExecCancel,
  'pty-open': PtyOpen,
  'pty-input': PtyInput,
  'pty-resize': PtyResize,
};
/** Answers, node → gateway → broker → client. */
export type ExecAnswerFrame = ExecOutput | ExecExit;
export const execAnswerFrames = { 'exec-output': ExecOutput, 'exec-exit': ExecExit };

/**
 * What an agent advertises as its resource `console` (a JSON value): its commands with their parameters'
 * patterns, and whether it takes shell commands and PTYs. The server never widens it.
 */
export const CONSOLE_RESOURCE = 'console';
export const ConsoleCapability = Type.Object({
  commands: Type.Record(
    Type.String({ pattern: COMMAND_NAME_PATTERN }),
    Type.Object({
      params: Type.Record(Type.String({ pattern: PARAM_NAME_PATTERN }), Type.String({ maxLength: 1024 })),
      description: Type.Optional(Type.String({ maxLength: 256 })),
    }),
    { maxProperties: 256 },
  ),
  shell: Type.Boolean(),
  pty: Type.Boolean(),
});
export type ConsoleCapability = Static<typeof ConsoleCapability>;

/** A finished exec as the requester sees it; also the ?wait=true REST answer. */
export function exitOf(
  id: string,
  status: ExecStatus,
  more: Partial<Omit<ExecExit, 'type' | 'id' | 'status'>> = {},
): ExecExit {
  return {
    type: 'exec-exit',
    id,
    status,
    code: more.code ?? null,
    signal: more.signal ?? null,
    truncated: more.truncated ?? false,
    durationMs: more.durationMs ?? 0,
    bytes: more.bytes ?? 0,
    ...(more.reason === undefined ? {} : { reason: more.reason }),
  };
}
