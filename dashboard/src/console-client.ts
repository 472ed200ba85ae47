// The page's side of the device console frames (issue 12, docs/protocol.md "Device console"): it picks request
// ids, sends `exec`, `exec-cancel` and `pty-*` through the page's one broker connection, and routes the
// `exec-output` / `exec-exit` frames the broker sends back to whoever asked, in sequence order. No DOM here.
//
// The frames' schemas are console-core's (services/protocol/console-messages.ts); the shapes below name only the
// fields the page reads, so a frame type with more fields still fits them.

/** The resource that carries an agent's console capability (console-core's CONSOLE_RESOURCE). */
export const CONSOLE_RESOURCE = 'console';

export interface ExecOutputFrame {
  type: 'exec-output';
  id: string;
  seq: number;
  stream: string;
  data: string;
}

export interface ExecExitFrame {
  type: 'exec-exit';
  id: string;
  status: string;
  code?: number | null;
  signal?: string | null;
  truncated?: boolean;
  durationMs?: number;
  bytes?: number;
  reason?: string;
}

export type ConsoleFrame = ExecOutputFrame | ExecExitFrame;

export function isConsoleFrame(msg: { type: string }): msg is ConsoleFrame {
  return msg.type === 'exec-output' || msg.type === 'exec-exit';
}

export type ExecMode = 'output' | 'ok-ng' | 'no-return';

export interface ExecRequest {
  uid: string;
  command?: string;
  params?: Record<string, string>;
  shell?: string;
  mode: ExecMode;
  timeoutMs?: number;
}

/** The frames this module sends (console-core's client frames). */
export type ConsoleRequestFrame =
  | ({ type: 'exec'; id: string } & ExecRequest)
  | { type: 'exec-cancel'; id: string }
  | { type: 'pty-open'; id: string; uid: string; cols: number; rows: number }
  | { type: 'pty-input'; id: string; data: string }
  | { type: 'pty-resize'; id: string; cols: number; rows: number };

export interface ExecListener {
  output(frame: ExecOutputFrame): void;
  exit(frame: ExecExitFrame): void;
}

/** Output frames held while an earlier one is missing; beyond this the gap is given up and the rest delivered. */
export const MAX_REORDER = 256;
/**
 * A PTY paste is sent in pieces of at most this many characters: even all control characters (six bytes each in
 * JSON) stay under the broker's 64 KB frame cap.
 */
export const PTY_INPUT_CHUNK = 4096;
/**
 * PTY input frames sent per second at most, and pieces waiting at most: the broker allows a client 100 frames a
 * second (burst 200) and closes one that keeps going over, so a big paste is paced instead of cut off; past the
 * queue (1 M characters), input is dropped and the caller told.
 */
export const PTY_INPUT_FRAMES_PER_SECOND = 50;
export const PTY_INPUT_QUEUE = 256;

interface Running {
  listener: ExecListener;
  next: number;
  held: Map<number, ExecOutputFrame>;
  /** PTY input pieces waiting for their turn (pacing). */
  queue?: string[];
}

export class ConsoleClient {
  private readonly running = new Map<string, Running>();
  private seq = 0;
  /** When the last PTY input frame was sent, and the timer that sends the next queued one. */
  private lastInputAt = Number.NEGATIVE_INFINITY;
  private inputTimer?: ReturnType<typeof setTimeout>;

  /** `send` is the page connection's: false when the frame could not be sent (not connected). */
  constructor(private readonly send: (frame: ConsoleRequestFrame) => boolean) {}

  /** Starts a command; answers its id, or undefined when the page is not connected. */
  exec(req: ExecRequest, listener: ExecListener): string | undefined {
    const id = this.nextId('c');
    if (!this.send({ type: 'exec', id, ...req })) return undefined;
    this.running.set(id, { listener, next: 0, held: new Map() });
    return id;
  }

  /** Asks the node to stop the command or close the PTY; the exit frame (`cancelled`) still comes. */
  cancel(id: string): boolean {
    if (!this.running.has(id)) return false;
    return this.send({ type: 'exec-cancel', id });
  }

  ptyOpen(uid: string, cols: number, rows: number, listener: ExecListener): string | undefined {
    const id = this.nextId('p');
    if (!this.send({ type: 'pty-open', id, uid, cols, rows })) return undefined;
    this.running.set(id, { listener, next: 0, held: new Map() });
    return id;
  }

  /** Types into a PTY; answers how many characters were dropped because too much was already waiting. */
  ptyInput(id: string, data: string): number {
    const r = this.running.get(id);
    if (r === undefined) return 0;
    r.queue ??= [];
    const queue = r.queue;
    let dropped = 0;
    for (let i = 0; i < data.length; i += PTY_INPUT_CHUNK) {
      const piece = data.slice(i, i + PTY_INPUT_CHUNK);
      if (queue.length >= PTY_INPUT_QUEUE) dropped += piece.length;
      else queue.push(piece);
    }
    this.pumpInput();
    return dropped;
  }

  /** Sends queued PTY input, at most PTY_INPUT_FRAMES_PER_SECOND frames a second over every PTY of the page. */
  private pumpInput(): void {
    if (this.inputTimer !== undefined) return;
    const gap = 1000 / PTY_INPUT_FRAMES_PER_SECOND;
    for (const [id, r] of this.running) {
      const piece = r.queue?.[0];
      if (piece === undefined) continue;
      const wait = this.lastInputAt + gap - Date.now();
      if (wait > 0) {
        this.inputTimer = setTimeout(() => {
          this.inputTimer = undefined;
          this.pumpInput();
        }, wait);
        return;
      }
      r.queue?.shift();
      this.lastInputAt = Date.now();
      this.send({ type: 'pty-input', id, data: piece });
      // One frame per turn: the next piece (of this PTY or another) waits for its slot.
      this.pumpInput();
      return;
    }
  }

  ptyResize(id: string, cols: number, rows: number): void {
    if (this.running.has(id)) this.send({ type: 'pty-resize', id, cols, rows });
  }

  isRunning(id: string): boolean {
    return this.running.has(id);
  }

  /** A frame from the broker; frames for ids this page did not ask for (or finished) are ignored. */
  frame(f: ConsoleFrame): void {
    const r = this.running.get(f.id);
    if (r === undefined) return;
    if (f.type === 'exec-exit') {
      this.running.delete(f.id);
      for (const seq of [...r.held.keys()].sort((a, b) => a - b)) {
        const held = r.held.get(seq);
        if (held) r.listener.output(held);
      }
      r.listener.exit(f);
      return;
    }
    if (f.seq < r.next) return; // a duplicate
    if (f.seq > r.next) {
      r.held.set(f.seq, f);
      if (r.held.size <= MAX_REORDER) return;
      // Too far behind: the missing frame is not coming; carry on from the oldest held one.
      r.next = Math.min(...r.held.keys());
    } else {
      r.listener.output(f);
      r.next++;
    }
    for (let h = r.held.get(r.next); h !== undefined; h = r.held.get(r.next)) {
      r.held.delete(r.next);
      r.listener.output(h);
      r.next++;
    }
  }

  /**
   * The page's connection dropped: the broker forgets this client's requests with it, so each one ends here
   * with status `error` (the device still enforces its own limits, and the audit log has the real outcome).
   */
  disconnected(): void {
    const ended = [...this.running.entries()];
    this.running.clear();
    for (const [id, r] of ended) {
      r.listener.exit({ type: 'exec-exit', id, status: 'error', reason: 'connection to the broker lost' });
    }
  }

  private nextId(prefix: string): string {
    // Not crypto.randomUUID(): it only exists on https or localhost (see app.ts writes).
    return `${prefix}${Date.now().toString(36)}-${(++this.seq).toString(36)}`;
  }
}
