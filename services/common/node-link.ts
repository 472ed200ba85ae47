// A device's link to the WebSocket gateway, the part every node program shares (the console agent,
// services/agent/agent.ts; the test node, utils/nodes/ws-node.ts): it dials out (so it works behind NAT),
// logs a refusal before the upgrade, and reconnects with exponential backoff and full jitter until stopped.
// What a node says on the link is its own: the owner gets the open socket and every message.
import WebSocket from 'ws';
import type { Logger } from './log.ts';

export interface NodeLinkOptions {
  /** The gateway URL (read at each attempt: a test node adds `?id=`). */
  url: () => string;
  /** Headers of the upgrade request (the node token). */
  headers: () => Record<string, string>;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Upgrade handshake limit; ws's default (none) when absent. */
  handshakeTimeoutMs?: number;
  /**
   * Whether the retry timer keeps the process alive: yes for a program whose only job is the link (the agent:
   * while the gateway is away, the timer is all that runs), no for a node embedded in a test or a demo.
   */
  holdProcess: boolean;
  /** Who this is in log lines (`agent`, `node`). */
  role: string;
  log: Logger;
}

export interface NodeLinkHandlers {
  /** A connection opened (first or after a reconnect). */
  open(ws: WebSocket): void;
  message(data: WebSocket.RawData, isBinary: boolean): void;
  /** A connection closed, whoever closed it (before any reconnect is planned). */
  closed?(code: number, reason: string): void;
}

export class NodeLink {
  private ws?: WebSocket;
  private running = false;
  private attempt = 0;
  private retryTimer?: NodeJS.Timeout;
  /** Connections opened so far (tests wait on it). */
  opens = 0;

  constructor(
    private readonly options: NodeLinkOptions,
    private readonly handlers: NodeLinkHandlers,
  ) {}

  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** The open socket, if any. */
  get socket(): WebSocket | undefined {
    return this.connected ? this.ws : undefined;
  }

  /** Starts dialling (and redialling) in the background. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.connect();
  }

  /** Stops reconnecting and closes the link with `code`, terminating it after `timeoutMs` without an answer. */
  async stop(code: number, reason: string, timeoutMs: number): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = undefined;
    if (ws === undefined || ws.readyState === WebSocket.CLOSED) return;
    if (ws.readyState !== WebSocket.OPEN) {
      ws.terminate();
      return;
    }
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(code, reason);
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, timeoutMs).unref();
    });
  }

  /** Sends on the open link; false when there is none. */
  send(text: string): boolean {
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(text);
    return true;
  }

  /** Drops the connection without a closing handshake, as a crashed device would (the link reconnects). */
  terminate(): void {
    this.ws?.terminate();
  }

  private connect(): void {
    if (!this.running) return;
    const { log, role } = this.options;
    const ws = new WebSocket(this.options.url(), {
      headers: this.options.headers(),
      perMessageDeflate: false,
      ...(this.options.handshakeTimeoutMs === undefined ? {} : { handshakeTimeout: this.options.handshakeTimeoutMs }),
    });
    this.ws = ws;
    ws.on('unexpected-response', (_req, res) => {
      log.warn({ status: res.statusCode }, `gateway refused the ${role}`);
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      this.attempt = 0;
      this.opens++;
      this.handlers.open(ws);
    });
    ws.on('message', (data, isBinary) => this.handlers.message(data, isBinary));
    ws.on('error', (err) => log.debug({ err: err.message }, `${role} socket error`));
    ws.on('close', (code, reason) => {
      this.handlers.closed?.(code, reason.toString());
      if (this.ws !== ws) return;
      this.ws = undefined;
      if (!this.running) return;
      log.warn({ code, reason: reason.toString() }, 'gateway connection closed; reconnecting');
      this.retry();
    });
  }

  private retry(): void {
    // Exponential backoff with full jitter: a restarted gateway is not hit by every node at the same instant.
    const { backoffInitialMs, backoffMaxMs } = this.options;
    const ceiling = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(this.attempt, 20));
    this.attempt++;
    this.retryTimer = setTimeout(() => this.connect(), Math.round(Math.random() * ceiling));
    if (!this.options.holdProcess) this.retryTimer.unref();
  }
}
