// `mycelium agent`: the device side of the console (issue 12). A node like any other on the WebSocket gateway
// (it dials out with a node token, so it works behind NAT and never listens), which reports its device's status
// as resources and runs the commands its own allow-list names. The server can never widen that list: the agent
// checks every request again (command, parameters, role for shell and PTY) whatever the broker decided.
//
// A command outlives the link: when the gateway goes away, the command keeps its limits, and its answers wait in
// a bounded queue (exits first) until the agent is connected again.
import { readFileSync } from 'node:fs';
import type { Logger } from '../common/log.ts';
import { NodeLink } from '../common/node-link.ts';
import type { Component } from '../common/run.ts';
import {
  type ExecAnswerFrame,
  type ExecFrame,
  type ExecRequestFrame,
  exitOf,
  execRequestFrames,
  CONSOLE_RESOURCE,
  type PtyOpen,
} from '../protocol/console-messages.ts';
import { checkOwnerOnly } from '../common/keys.ts';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import { frameParser } from '../protocol/frame-parser.ts';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { Json } from '../protocol/messages.ts';
import { buildArgv, type CommandTable, capabilityOf, readCommands } from './commands-file.ts';
import { keyByPin, readKeyFile } from './pin.ts'; // [accounts]
import type { AgentConfig } from './options.ts';
import { Runner } from './runner.ts';
import { deviceStatus } from './status.ts';

/** The shape of services/agent/pty.ts (the console-ui's module), loaded only when a PTY is asked for. */
interface PtySession {
  onData(cb: (data: string) => void): void;
  onExit(cb: (exit: { code: number | null; signal: string | null }) => void): void;
  write(data: string): void;
  resize(cols: number, rows: number): void;
  kill(): void;
}
interface PtyModule {
  openPty(opts: { cols: number; rows: number }): PtySession | null;
  ptyAvailable?(): boolean;
}

/** services/agent/pty.ts, or null when it (or node-pty under it) cannot be loaded: a refusal, never a crash. */
async function loadPtyModule(): Promise<PtyModule | null> {
  try {
    return (await import('./pty.ts')) as PtyModule;
  } catch {
    return null;
  }
}

// Only the console's request frames are compiled here (not frames.ts, which compiles every family at load): the
// agent runs on small devices, and its idle memory is a goal (docs/console.md).
const parseRequest = frameParser<ExecRequestFrame>(execRequestFrames, (schema: TSchema) => {
  const compiled = TypeCompiler.Compile(schema);
  return { check: (value) => compiled.Check(value), firstError: (value) => compiled.Errors(value).First() };
});

export interface AgentDeps {
  log: Logger;
  /** The allow-list; default: read from --commands (none without it). */
  commands?: CommandTable;
  /** The agent's version, reported as a resource. */
  version?: string;
}

interface Pty {
  session: PtySession;
  seq: number;
  bytes: number;
  started: number;
}

/** Reads the node token from --token or --token-file (refused when others may read the file). */
export function agentToken(config: Pick<AgentConfig, 'token' | 'tokenFile'>): string {
  if (config.token) return config.token;
  if (config.tokenFile === undefined) throw new MyceliumError(ErrorCode.Config, 'give --token, --token-file or --pin');
  checkOwnerOnly(config.tokenFile, 'a token file');
  return readFileSync(config.tokenFile, 'utf8').trim();
}

export class Agent implements Component {
  private readonly link: NodeLink;
  private running = false;
  private statusTimer?: NodeJS.Timeout;
  private token = '';
  /** [accounts] Ends the wait for a PIN's claim when the agent stops. */
  private pinWait?: AbortController;
  private commands: CommandTable = new Map();
  private readonly runner: Runner;
  private readonly ptys = new Map<string, Pty>();
  /** Answers waiting for the link (bounded by --max-queued-frames). */
  private queue: ExecAnswerFrame[] = [];
  private readonly log: Logger;
  private ptyAvailable = false;

  constructor(
    private readonly config: AgentConfig,
    private readonly deps: AgentDeps,
  ) {
    this.log = deps.log;
    this.runner = new Runner({
      maxConcurrent: config.maxConcurrent,
      maxOutputBytes: config.maxOutputBytes,
      defaultTimeoutMs: config.defaultTimeoutMs,
      maxTimeoutMs: config.maxTimeoutMs,
      killGraceMs: config.killGraceMs,
    });
    this.link = new NodeLink(
      {
        url: () => config.gatewayUrl,
        headers: () => ({ authorization: `Bearer ${this.token}` }),
        backoffInitialMs: config.backoffInitialMs,
        backoffMaxMs: config.backoffMaxMs,
        handshakeTimeoutMs: 10_000,
        holdProcess: true,
        role: 'agent',
        log: this.log,
      },
      {
        open: () => this.onOpen(),
        message: (data, isBinary) => {
          if (!isBinary) this.onMessage(data.toString());
        },
      },
    );
  }

  get connected(): boolean {
    return this.link.connected;
  }

  /** Connections opened so far (tests wait on it). */
  get opens(): number {
    return this.link.opens;
  }

  async start(): Promise<void> {
    if (this.running) return;
    // [accounts] --pin with no credential: the key comes later, from the PIN's claim (provisionKey).
    const byPin = this.config.pin && !this.config.token && this.config.tokenFile === undefined;
    if (!byPin) this.token = agentToken(this.config);
    // A --key-out file that is unsafe or not a key is a configuration error now, not a log line later.
    else if (this.config.keyOut !== undefined) readKeyFile(this.config.keyOut);
    this.commands = this.deps.commands ?? (this.config.commands ? readCommands(this.config.commands) : new Map());
    // A PTY is advertised only when it can really be opened here.
    if (this.config.allowPty) {
      const mod = await loadPtyModule();
      this.ptyAvailable = mod !== null && (mod.ptyAvailable?.() ?? true);
      if (!this.ptyAvailable) this.log.warn('--allow-pty given but node-pty is not available; PTYs are refused');
    }
    this.running = true;
    if (byPin) this.provisionKey();
    else this.link.start();
    this.statusTimer = setInterval(() => {
      this.sendStatus().catch((err: unknown) => this.log.warn({ err }, 'status not sent'));
    }, this.config.statusInterval * 1000);
    this.statusTimer.unref();
    this.log.info(
      {
        gateway: this.config.gatewayUrl,
        commands: this.commands.size,
        shell: this.config.allowShell,
        pty: this.config.allowPty,
      },
      'agent started',
    );
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.pinWait?.abort(); // [accounts]
    clearInterval(this.statusTimer);
    this.runner.stop();
    for (const p of this.ptys.values()) p.session.kill();
    this.ptys.clear();
    await this.link.stop(1001, 'agent stopping', 2000);
  }

  /** [accounts] Gets the device key by PIN (or from --key-out), then connects with it. */
  private provisionKey(): void {
    this.pinWait = new AbortController();
    keyByPin(this.config, this.log, this.pinWait.signal, ({ key, node }) => {
      if (!this.running) return;
      this.log.info({ node }, 'connecting with the device key');
      this.token = key;
      this.link.start();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // The link

  private onOpen(): void {
    this.log.info({ url: this.config.gatewayUrl }, 'connected to the gateway');
    this.sendResources().catch((err: unknown) => this.log.warn({ err }, 'resources not sent'));
    const queued = this.queue;
    this.queue = [];
    for (const f of queued) this.send(f);
  }

  private sendRaw(frame: object): boolean {
    return this.link.send(JSON.stringify(frame));
  }

  /** An answer: sent, or queued until the link is back (exits are kept before output). */
  private send(frame: ExecAnswerFrame): void {
    if (this.sendRaw(frame)) return;
    if (this.queue.length >= this.config.maxQueuedFrames) {
      const i = this.queue.findIndex((f) => f.type === 'exec-output');
      if (i >= 0) this.queue.splice(i, 1);
      else if (frame.type === 'exec-output') return;
      else this.queue.shift();
    }
    this.queue.push(frame);
  }

  private async sendResources(): Promise<void> {
    const capability = capabilityOf(this.commands, this.config.allowShell, this.ptyAvailable);
    const status = await deviceStatus(this.deps.version ?? '0.0.0', this.config.diskPath);
    const data: Record<string, Json> = { ...status, [CONSOLE_RESOURCE]: capability as unknown as Json };
    this.sendRaw({ type: 'update', data });
  }

  private async sendStatus(): Promise<void> {
    if (!this.connected) return;
    this.sendRaw({ type: 'update', data: await deviceStatus(this.deps.version ?? '0.0.0', this.config.diskPath) });
  }

  // ---------------------------------------------------------------------------------------------
  // Frames from the gateway

  private onMessage(text: string): void {
    let peek: { request?: unknown; type?: unknown; endpoint?: unknown; id?: unknown };
    try {
      peek = JSON.parse(text) as typeof peek;
    } catch {
      return;
    }
    if (typeof peek !== 'object' || peek === null) return;
    if (peek.request === 'discover') {
      this.sendResources().catch((err: unknown) => this.log.warn({ err }, 'resources not sent'));
      return;
    }
    if (typeof peek.endpoint === 'string' && typeof peek.id === 'string') {
      // A write: the agent's resources are read-only.
      this.sendRaw({ type: 'ack', id: peek.id, result: 'error', reason: 'read-only' });
      return;
    }
    const parsed = parseRequest(text);
    if (!parsed.ok) {
      this.log.warn({ reason: parsed.reason }, 'bad console frame from the gateway; ignored');
      if (typeof peek.id === 'string' && (peek.type === 'exec' || peek.type === 'pty-open') && peek.id.length <= 256) {
        this.send(exitOf(peek.id, 'refused', { reason: parsed.reason.slice(0, 256) }));
      }
      return;
    }
    const msg = parsed.value;
    switch (msg.type) {
      case 'exec':
        return this.exec(msg);
      case 'exec-cancel':
        if (!this.runner.cancel(msg.id)) this.ptys.get(msg.id)?.session.kill();
        return;
      case 'pty-open':
        this.openPty(msg).catch((err: unknown) => {
          this.log.warn({ err }, 'pty failed');
          this.send(exitOf(msg.id, 'error', { reason: 'pty failed' }));
        });
        return;
      case 'pty-input':
        this.ptys.get(msg.id)?.session.write(msg.data);
        return;
      case 'pty-resize':
        this.ptys.get(msg.id)?.session.resize(msg.cols, msg.rows);
        return;
      default: {
        const never: never = msg;
        return never;
      }
    }
  }

  /** Checks the request again (defence in depth), then runs it. */
  private exec(msg: ExecFrame): void {
    const role = msg.requester?.role;
    const refuse = (reason: string) => {
      this.log.info({ id: msg.id, command: msg.command, sub: msg.requester?.sub, reason }, 'exec refused');
      this.send(exitOf(msg.id, 'refused', { reason }));
    };
    if (this.runner.has(msg.id) || this.ptys.has(msg.id)) return refuse('duplicate id');
    if (role !== 'operator' && role !== 'admin') return refuse(`role ${role ?? 'none'} may not exec`);
    let argv: string[] | undefined;
    let shellLine: string | undefined;
    let timeoutMs = msg.timeoutMs;
    if ((msg.command === undefined) === (msg.shell === undefined)) return refuse('give either command or shell');
    if (msg.shell !== undefined) {
      if (!this.config.allowShell) return refuse('shell not allowed on this node');
      if (role !== 'admin') return refuse('shell needs role admin');
      shellLine = msg.shell;
    } else {
      const built = buildArgv(this.commands, msg.command as string, msg.params);
      if (typeof built === 'string') return refuse(built);
      argv = built;
      timeoutMs ??= this.commands.get(msg.command as string)?.timeoutMs;
    }
    this.log.info(
      { id: msg.id, command: msg.command, shell: shellLine !== undefined, sub: msg.requester?.sub },
      'exec',
    );
    const handle = this.runner.start(
      {
        id: msg.id,
        mode: msg.mode ?? 'output',
        ...(argv === undefined ? {} : { argv }),
        ...(shellLine === undefined ? {} : { shellLine }),
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
      },
      {
        output: (id, seq, stream, data) => this.send({ type: 'exec-output', id, seq, stream, data }),
        exit: (exit) => this.send(exit),
      },
      this.ptys.size,
    );
    if (handle === 'busy')
      this.send(exitOf(msg.id, 'busy', { reason: `${this.config.maxConcurrent} commands running` }));
  }

  private async openPty(msg: PtyOpen): Promise<void> {
    const refuse = (status: 'refused' | 'busy', reason: string) => this.send(exitOf(msg.id, status, { reason }));
    if (this.runner.has(msg.id) || this.ptys.has(msg.id)) return refuse('refused', 'duplicate id');
    if (!this.config.allowPty) return refuse('refused', 'pty not allowed on this node');
    if (msg.requester?.role !== 'admin') return refuse('refused', 'pty needs role admin');
    if (!this.runner.hasRoom(this.ptys.size)) return refuse('busy', `${this.config.maxConcurrent} commands running`);
    const mod = await loadPtyModule();
    if (mod === null) return refuse('refused', 'pty-unavailable');
    const session = mod.openPty({ cols: msg.cols, rows: msg.rows });
    if (session === null) return refuse('refused', 'pty-unavailable');
    const pty: Pty = { session, seq: 0, bytes: 0, started: Date.now() };
    this.ptys.set(msg.id, pty);
    this.log.info({ id: msg.id, sub: msg.requester?.sub }, 'pty opened');
    session.onData((data) => {
      pty.bytes += Buffer.byteLength(data);
      this.send({ type: 'exec-output', id: msg.id, seq: pty.seq++, stream: 'pty', data });
    });
    session.onExit(({ code, signal }) => {
      this.ptys.delete(msg.id);
      this.send(
        exitOf(msg.id, code === 0 ? 'ok' : 'ng', {
          code,
          signal,
          durationMs: Date.now() - pty.started,
          bytes: pty.bytes,
        }),
      );
    });
  }
}
