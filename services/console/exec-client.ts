// The requesting side of a console request on the bus: what the broker runs for its WebSocket and REST clients,
// and what back-end services (the rules service) call directly. A request is sent to `myc.exec.<gateway>` and is
// answered by the broker holding that gateway's connection (exec-server.ts), wherever it runs; the answers come
// back on a subject of this call alone, so output reaches only the requester.
//
// The caller is trusted: role checks happen before (the broker's console-router.ts); the agent checks the role
// again for shell and PTY.
import { randomUUID } from 'node:crypto';
import { type Bus, BusError, type BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import { compiledCheck } from '../protocol/frames.ts';
import {
  type ExecExit,
  type ExecMode,
  type ExecOutput,
  type ExecParams,
  type ExecRequestFrame,
  exitOf,
  ExecExit as ExecExitSchema,
  ExecOutput as ExecOutputSchema,
  type Requester,
} from '../protocol/console-messages.ts';
import { parseJson, stringifySafe } from '../protocol/schema.ts';

export interface ExecRequest {
  uid: string;
  /** The gateway the node is connected to (the node table's `gateway`). */
  gateway: string;
  command?: string;
  shell?: string;
  params?: ExecParams;
  mode?: ExecMode;
  timeoutMs?: number;
  requester: Requester;
}

export interface PtyRequest {
  uid: string;
  gateway: string;
  cols: number;
  rows: number;
  requester: Requester;
}

/** What travels on `myc.exec.<gateway>`: the frame (its id is this call's) and where the answers go. */
export interface ExecBusMessage {
  frame: ExecRequestFrame;
  answerTo: string;
}

export interface ExecClientOptions {
  /** How long the broker holding the gateway has to accept the request. */
  acceptTimeoutMs?: number;
  /** Used when the request names no timeout, to bound the wait (the agent applies its own default). */
  defaultTimeoutMs?: number;
  /** Added to the timeout before the caller gives up on an exit frame (the agent kills with a grace first). */
  graceMs?: number;
  /**
   * The caller no longer wants the answer (a rule's time limit, an HTTP client gone): the call is cancelled on the
   * device as with cancel().
   */
  signal?: AbortSignal;
}

export const EXEC_CLIENT_DEFAULTS = { acceptTimeoutMs: 5000, defaultTimeoutMs: 60_000, graceMs: 15_000 } as const;

export interface ExecCall {
  /** Resolves with the exec-exit (never rejects): the agent's, or one made here (unreachable, timeout). */
  readonly done: Promise<ExecExit>;
  /** Asks the agent to cancel (TERM, then KILL the process group); the exit follows with status `cancelled`. */
  cancel(): void;
  /** PTY only: input and resize. */
  send(frame: { type: 'pty-input'; data: string } | { type: 'pty-resize'; cols: number; rows: number }): void;
}

const outputCheck = compiledCheck(ExecOutputSchema);
const exitCheck = compiledCheck(ExecExitSchema);

/** Runs a command (or shell line) on a node through the bus. `onFrame` gets every exec-output, in order. */
export function execOnNode(
  bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>,
  req: ExecRequest,
  onFrame?: (f: ExecOutput) => void,
  options: ExecClientOptions = {},
): ExecCall {
  const id = randomUUID();
  const frame: ExecRequestFrame = {
    type: 'exec',
    id,
    uid: req.uid,
    requester: req.requester,
    ...(req.command === undefined ? {} : { command: req.command }),
    ...(req.shell === undefined ? {} : { shell: req.shell }),
    ...(req.params === undefined ? {} : { params: req.params }),
    ...(req.mode === undefined ? {} : { mode: req.mode }),
    ...(req.timeoutMs === undefined ? {} : { timeoutMs: req.timeoutMs }),
  };
  const timeout = req.timeoutMs ?? options.defaultTimeoutMs ?? EXEC_CLIENT_DEFAULTS.defaultTimeoutMs;
  return new BusCall(bus, req.gateway, id, frame, onFrame, timeout, options);
}

/** Opens a PTY on a node through the bus; output arrives as exec-output frames with stream `pty`. */
export function openPtyOnNode(
  bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>,
  req: PtyRequest,
  onFrame?: (f: ExecOutput) => void,
  options: ExecClientOptions = {},
): ExecCall {
  const id = randomUUID();
  const frame: ExecRequestFrame = {
    type: 'pty-open',
    id,
    uid: req.uid,
    cols: req.cols,
    rows: req.rows,
    requester: req.requester,
  };
  return new BusCall(bus, req.gateway, id, frame, onFrame, undefined, options);
}

class BusCall implements ExecCall {
  readonly done: Promise<ExecExit>;
  private resolve!: (exit: ExecExit) => void;
  private readonly sub: BusSubscription;
  private readonly subject: string;
  private readonly started = Date.now();
  private timer?: NodeJS.Timeout;
  private finished = false;
  private cancelled = false;
  private nextSeq = 0;
  /** Removes the abort listener (a long-lived signal must not keep finished calls). */
  private unlisten?: () => void;

  constructor(
    private readonly bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>,
    gateway: string,
    private readonly id: string,
    frame: ExecRequestFrame,
    private readonly onFrame: ((f: ExecOutput) => void) | undefined,
    timeoutMs: number | undefined,
    private readonly options: ExecClientOptions,
  ) {
    this.done = new Promise((resolve) => {
      this.resolve = resolve;
    });
    this.subject = subjects.exec(gateway);
    const answerTo = subjects.execAnswers(id);
    // Subscribed before the request goes out: on NATS one connection keeps order, so no answer can be missed.
    this.sub = bus.subscribe(answerTo, (msg) => this.onAnswer(msg.data));
    const grace = options.graceMs ?? EXEC_CLIENT_DEFAULTS.graceMs;
    if (timeoutMs !== undefined) this.arm(timeoutMs + grace, 'timeout', 'no exit from the node in time');
    if (options.signal !== undefined) {
      const signal = options.signal;
      const onAbort = () => this.cancel();
      if (signal.aborted) queueMicrotask(onAbort);
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        this.unlisten = () => signal.removeEventListener('abort', onAbort);
      }
    }
    const text = stringifySafe({ frame, answerTo } satisfies ExecBusMessage);
    if (text === undefined) {
      this.finish(exitOf(id, 'error', { reason: 'request cannot be serialized' }));
      return;
    }
    bus.request(this.subject, Buffer.from(text), options.acceptTimeoutMs ?? EXEC_CLIENT_DEFAULTS.acceptTimeoutMs).then(
      (reply) => {
        const json = parseJson(Buffer.from(reply.data).toString());
        const value = json.ok ? (json.value as { ok?: unknown; reason?: unknown }) : undefined;
        if (value?.ok !== true) {
          const reason = typeof value?.reason === 'string' ? value.reason : 'bad reply from the gateway broker';
          // The gateway's broker at its cap is `busy` like an agent at its own: a caller may retry later.
          this.finish(exitOf(id, reason === 'busy' ? 'busy' : 'error', { reason: reason.slice(0, 256) }));
        }
      },
      (err: unknown) => {
        const reason =
          err instanceof BusError && err.code === 'no-responders' ? 'gateway-unreachable' : 'gateway-no-answer';
        this.finish(exitOf(id, 'error', { reason }));
      },
    );
  }

  cancel(): void {
    if (this.finished || this.cancelled) return;
    this.cancelled = true;
    this.publish({ type: 'exec-cancel', id: this.id });
    // The agent answers `cancelled` once the process group is gone; if nobody answers, the call still ends.
    this.arm(this.options.graceMs ?? EXEC_CLIENT_DEFAULTS.graceMs, 'cancelled', 'no answer to the cancel');
  }

  send(frame: { type: 'pty-input'; data: string } | { type: 'pty-resize'; cols: number; rows: number }): void {
    if (this.finished) return;
    this.publish({ ...frame, id: this.id });
  }

  private publish(frame: ExecRequestFrame): void {
    const text = stringifySafe({ frame, answerTo: subjects.execAnswers(this.id) } satisfies ExecBusMessage);
    if (text !== undefined) this.bus.publish(this.subject, Buffer.from(text));
  }

  private arm(ms: number, status: 'timeout' | 'cancelled', reason: string): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      // Giving up on the answer also ends the command: the agent's own timeout may be far longer (a request that
      // names none runs under the agent's --default-timeout-ms, which this side does not know).
      if (status === 'timeout' && !this.cancelled) this.publish({ type: 'exec-cancel', id: this.id });
      this.finish(exitOf(this.id, status, { reason, durationMs: Date.now() - this.started }));
    }, ms);
    this.timer.unref();
  }

  /** Bus input from the broker holding the gateway: checked like any frame before anyone sees it. */
  private onAnswer(data: Uint8Array): void {
    if (this.finished) return;
    const json = parseJson(Buffer.from(data).toString());
    if (!json.ok) return;
    const value = json.value as { type?: unknown; id?: unknown };
    if (value.id !== this.id) return;
    if (value.type === 'exec-output' && outputCheck.check(value)) {
      const out = value as ExecOutput;
      // Bus order is kept per publisher, so seq only guards against a confused peer.
      if (out.seq < this.nextSeq) return;
      this.nextSeq = out.seq + 1;
      this.onFrame?.(out);
    } else if (value.type === 'exec-exit' && exitCheck.check(value)) {
      this.finish(value as ExecExit);
    }
  }

  private finish(exit: ExecExit): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.timer);
    this.unlisten?.();
    this.sub.unsubscribe();
    this.resolve(exit);
  }
}
