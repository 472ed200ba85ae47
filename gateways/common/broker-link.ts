// The gateway's link to the broker (/gw), shared by every gateway. It reconnects after any failure with
// exponential backoff and full jitter, rotating through the broker URLs it was given, checks the link with
// its own WebSocket pings, and tells its owner when a connection opens so the node state can be replayed.
// The broker closes a session at its token's exp (4401), so before that the link renews: it opens a second
// connection with a fresh token and closes the first only once the second is open (make-before-break). The
// broker hands the gateway over to the new connection and a re-announced online node is not news for clients,
// so they see no `out`/`new` flap.
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
  /** Fraction of a token's remaining life after which the link renews it (0 < f < 1). */
  renewAtFraction?: number;
  onOpen: () => void;
  onMessage: (msg: BrokerToGatewayMessage) => void;
  /** [accounts] The current connection closed (what waited for an answer on it will get none). */
  onClose?: () => void;
}

export const LINK_DEFAULTS = {
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
  pingIntervalMs: 15_000,
  renewAtFraction: 0.8,
} as const;

/**
 * The `exp` claim of a JWT (seconds since the epoch), read without verifying it: the broker verifies; the
 * link only needs to know when to renew. Undefined when the token is not a JWT or has no numeric exp.
 */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split('.')[1];
  if (part === undefined) return undefined;
  try {
    const payload: unknown = JSON.parse(Buffer.from(part, 'base64url').toString());
    const exp = (payload as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

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
  private renewTimer?: NodeJS.Timeout;
  /** Connections opened to replace one whose token is about to expire. */
  renewals = 0;
  /** Connections opened after a (re)connect attempt (renewals not counted): reconnects = opened - 1. */
  opened = 0;
  private alive = false;
  private stopped = true;
  private readonly urls: string[];
  private readonly opts: Required<Omit<BrokerLinkOptions, 'urls' | 'onClose'>> & Pick<BrokerLinkOptions, 'onClose'>;

  constructor(options: BrokerLinkOptions) {
    if (options.urls.length === 0) throw new Error('BrokerLink needs at least one broker URL');
    this.urls = options.urls.map(gatewayUrl);
    this.opts = { ...LINK_DEFAULTS, ...options } as Required<Omit<BrokerLinkOptions, 'urls' | 'onClose'>> &
      Pick<BrokerLinkOptions, 'onClose'>;
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
    this.connect().catch((err: unknown) => this.opts.log.error({ err }, 'broker link failed'));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.renewTimer);
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
    const ws = this.dial(url, token);
    this.ws = ws;
    ws.on('open', () => {
      this.attempt = 0;
      this.opened++;
      this.opts.log.info({ url }, 'connected to broker');
      this.adopt(ws, token);
    });
    this.reconnectOnClose(ws, url);
  }

  /** When `ws` closes while it is the current connection, the link reconnects (a replaced one is let go). */
  private reconnectOnClose(ws: WebSocket, url: string): void {
    ws.on('close', (code, reason) => {
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      clearTimeout(this.renewTimer);
      this.ws = undefined;
      this.opts.onClose?.();
      if (this.stopped) return;
      this.opts.log.warn({ url, code, reason: reason.toString() }, 'broker link closed; reconnecting');
      this.retry();
    });
  }

  /** Opens a connection; frames from it are handled whichever connection is current. */
  private dial(url: string, token: string): WebSocket {
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
      handshakeTimeout: 10_000,
    });
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
    ws.on('pong', () => {
      if (this.ws === ws) this.alive = true;
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
    return ws;
  }

  /** `ws` is open and becomes the current connection: pings, renewal before its token expires, replay. */
  private adopt(ws: WebSocket, token: string): void {
    this.ws = ws;
    this.alive = true;
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.heartbeat(ws), this.opts.pingIntervalMs);
    this.pingTimer.unref();
    this.scheduleRenewal(ws, tokenExpiry(token));
    this.opts.onOpen();
  }

  private scheduleRenewal(ws: WebSocket, exp: number | undefined): void {
    clearTimeout(this.renewTimer);
    if (exp === undefined) return;
    const left = exp * 1000 - Date.now();
    // A token already expired (or nearly) is not renewed early: the broker closes 4401 and the link reconnects.
    if (left <= 0) return;
    this.renewTimer = setTimeout(() => {
      this.renew(ws, exp).catch((err: unknown) => this.opts.log.error({ err }, 'token renewal failed'));
    }, left * this.opts.renewAtFraction);
    this.renewTimer.unref();
  }

  /**
   * Make-before-break: a second connection with a fresh token; once it is open it becomes current (the node
   * state is replayed on it) and the old one is closed. If it fails, the next try is at half the remaining life.
   */
  private async renew(old: WebSocket, exp: number): Promise<void> {
    if (this.stopped || this.ws !== old) return;
    const retryLater = (why: string, detail: Record<string, unknown> = {}): void => {
      this.opts.log.warn({ ...detail, why }, 'token renewal failed; will try again');
      if (this.ws === old && !this.stopped) this.scheduleRenewalHalf(old, exp);
    };
    let token: string;
    try {
      token = await this.opts.token();
    } catch (err) {
      return retryLater('no token', { err });
    }
    if (this.stopped || this.ws !== old) return;
    const url = this.currentUrl;
    const next = this.dial(url, token);
    next.once('open', () => {
      if (this.stopped || this.ws !== old) {
        next.close(1000, 'not needed');
        return;
      }
      this.renewals++;
      this.opts.log.info({ url }, 'broker link renewed with a fresh token');
      this.reconnectOnClose(next, url);
      this.adopt(next, token);
      // The broker has already replaced the old connection (4001); this closes ours if it has not yet.
      old.close(1000, 'token renewed');
    });
    next.once('close', () => {
      if (this.ws === old) retryLater('connection failed', { url });
    });
  }

  private scheduleRenewalHalf(ws: WebSocket, exp: number): void {
    clearTimeout(this.renewTimer);
    const left = exp * 1000 - Date.now();
    if (left <= 1000) return;
    this.renewTimer = setTimeout(() => {
      this.renew(ws, exp).catch((err: unknown) => this.opts.log.error({ err }, 'token renewal failed'));
    }, left / 2);
    this.renewTimer.unref();
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
    this.retryTimer = setTimeout(() => {
      this.connect().catch((err: unknown) => this.opts.log.error({ err }, 'broker link failed'));
    }, delay);
    this.retryTimer.unref();
  }
}
