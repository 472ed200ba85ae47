// The gateway's link to the broker (/gw), shared by every gateway. It reconnects after any failure with
// exponential backoff and full jitter, rotating through the broker URLs it was given, checks the link with
// its own WebSocket pings, and tells its owner when a connection opens so the node state can be replayed.
import WebSocket from 'ws';
import type { Logger } from '../../services/common/log.ts';
import { parseBrokerToGatewayFrame } from '../../services/protocol/frames.ts';
import type { BrokerToGatewayMessage } from '../../services/protocol/messages.ts';

export interface BrokerLinkOptions {
  /** Broker URLs (`ws://host:8000`; `/gw` is appended when the path is empty). Tried in turn. */
  urls: string[];
  /** Called before every connection attempt, so short-lived tokens can be minted fresh. */
  token: () => Promise<string>;
  log: Logger;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  pingIntervalMs?: number;
  onOpen: () => void;
  onMessage: (msg: BrokerToGatewayMessage) => void;
}

export const LINK_DEFAULTS = { backoffInitialMs: 500, backoffMaxMs: 30_000, pingIntervalMs: 15_000 } as const;

export function gatewayUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/gw';
  return u.toString();
}

export class BrokerLink {
  private ws?: WebSocket;
  private attempt = 0;
  private urlIndex = 0;
  private retryTimer?: NodeJS.Timeout;
  private pingTimer?: NodeJS.Timeout;
  private alive = false;
  private stopped = true;
  private readonly urls: string[];
  private readonly opts: Required<Omit<BrokerLinkOptions, 'urls'>>;

  constructor(options: BrokerLinkOptions) {
    if (options.urls.length === 0) throw new Error('BrokerLink needs at least one broker URL');
    this.urls = options.urls.map(gatewayUrl);
    this.opts = { ...LINK_DEFAULTS, ...options } as Required<Omit<BrokerLinkOptions, 'urls'>>;
  }

  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** The URL of the current (or next) connection. */
  get currentUrl(): string {
    return this.urls[this.urlIndex];
  }

  /** Starts connecting in the background; never rejects (the gateway keeps running without a broker). */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    void this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = undefined;
    if (ws === undefined || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1001, 'gateway shutting down');
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, 1000).unref();
    });
  }

  /** Sends a frame if connected; returns false otherwise (the caller keeps state, not a backlog). */
  send(frame: string): boolean {
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(frame);
    return true;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const url = this.currentUrl;
    let token: string;
    try {
      token = await this.opts.token();
    } catch (err) {
      this.opts.log.error({ err }, 'cannot get a token for the broker');
      return this.retry();
    }
    if (this.stopped) return;
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
      handshakeTimeout: 10_000,
    });
    this.ws = ws;
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString();
      });
      res.on('end', () =>
        this.opts.log.error({ url, status: res.statusCode, reason: body.trim() }, 'broker refused the connection'),
      );
      ws.terminate();
    });
    ws.on('open', () => {
      this.attempt = 0;
      this.alive = true;
      this.opts.log.info({ url }, 'connected to broker');
      this.pingTimer = setInterval(() => this.heartbeat(ws), this.opts.pingIntervalMs);
      this.pingTimer.unref();
      this.opts.onOpen();
    });
    ws.on('pong', () => {
      this.alive = true;
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const parsed = parseBrokerToGatewayFrame(data.toString());
      if (!parsed.ok) {
        this.opts.log.warn({ reason: parsed.reason }, 'bad frame from broker; ignored');
        return;
      }
      this.opts.onMessage(parsed.value);
    });
    ws.on('error', (err) => this.opts.log.debug({ err: err.message, url }, 'broker link error'));
    ws.on('close', (code, reason) => {
      clearInterval(this.pingTimer);
      if (this.ws !== ws) return;
      this.ws = undefined;
      if (this.stopped) return;
      this.opts.log.warn({ url, code, reason: reason.toString() }, 'broker link closed; reconnecting');
      this.retry();
    });
  }

  /** A broker that did not answer the previous ping is treated as gone (half-open TCP). */
  private heartbeat(ws: WebSocket): void {
    if (!this.alive) {
      this.opts.log.warn('broker stopped answering pings');
      ws.terminate();
      return;
    }
    this.alive = false;
    ws.ping();
  }

  private retry(): void {
    if (this.stopped) return;
    // Next URL on every failure: a dead broker is skipped at once when there are others.
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    const ceiling = Math.min(this.opts.backoffMaxMs, this.opts.backoffInitialMs * 2 ** this.attempt);
    // After a full round through the URLs, back off; "full jitter" spreads reconnecting gateways apart.
    const delay = this.urlIndex === 0 || this.urls.length === 1 ? Math.round(Math.random() * ceiling) : 0;
    if (this.urlIndex === 0 || this.urls.length === 1) this.attempt++;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
    this.retryTimer.unref();
  }
}
