// The page's link to the broker's /ws: token as the subprotocol pair ['bearer', token] (browsers cannot set
// headers on a WebSocket), pyaiot's registration on open, reconnection with exponential backoff and jitter.
import { parseBrokerToClientFrame } from '../../services/protocol/dashboard-frames.ts';
import { CloseCode } from '../../services/protocol/errors.ts';
import type { BrokerToClientMessage, ClientMessage } from '../../services/protocol/messages.ts';

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 30_000;
/** Handshakes refused in a row (broker reachable) before the token is declared refused. Two, because a
 *  broker that is shutting down also refuses (503) and the browser cannot see the status code. */
export const REFUSALS_BEFORE_LOGIN = 2;
export type ConnectionState =
  | { kind: 'connecting' }
  | { kind: 'open' }
  | { kind: 'retrying'; inMs: number; reachable: boolean }
  | { kind: 'refused' }
  | { kind: 'stopped' };

export interface ConnectionHandlers {
  state(s: ConnectionState): void;
  message(msg: BrokerToClientMessage): void;
  /** A frame that failed validation (counted and logged, never applied). */
  invalid(reason: string): void;
  /**
   * [accounts-ui] The broker closed the session because its token expired or was revoked (4401). True: the page
   * renews the token and calls start() itself; false: the connection retries as for any close.
   */
  tokenEnded?(): boolean;
}

/** The WebSocket endpoint for a broker URL given as ws://host:port (with or without /ws). */
export function wsEndpoint(brokerUrl: string): string {
  const base = brokerUrl.replace(/\/+$/, '');
  return base.endsWith('/ws') ? base : `${base}/ws`;
}

export class BrokerConnection {
  private ws?: WebSocket;
  private timer?: number;
  private attempt = 0;
  private refusals = 0;
  private stopped = true;
  invalidFrames = 0;

  constructor(
    private readonly brokerUrl: string,
    private readonly handlers: ConnectionHandlers,
  ) {}

  start(token: string | undefined): void {
    this.stop();
    this.stopped = false;
    this.token = token;
    this.attempt = 0;
    this.refusals = 0;
    this.open();
  }

  private token?: string;
  /** [ws-renew] Ids of the `token` frames sent on the open socket and not answered yet. */
  private renewals = new Set<string>();
  private renewalSeq = 0;

  /**
   * [accounts-ui] The token for the next (re)connection. [ws-renew] And sent to the open session as a `token` frame,
   * so it outlives the old token without a reconnect (which would end console requests and terminals). A refusal
   * changes nothing: the broker closes the session with 4401 at the old token's expiry and the page reconnects.
   */
  setToken(token: string | undefined): void {
    this.token = token;
    if (token === undefined || this.ws?.readyState !== WebSocket.OPEN) return;
    const id = `token-${++this.renewalSeq}`;
    this.renewals.add(id);
    this.send({ type: 'token', token, id });
  }

  /** [accounts-ui] Not connected and not trying to (stopped, or the token was refused). */
  get idle(): boolean {
    return this.stopped;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      ws.onopen = ws.onclose = ws.onmessage = ws.onerror = null;
      ws.close(1000, 'page closed the connection');
    }
  }

  send(msg: ClientMessage): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  private open(): void {
    this.handlers.state({ kind: 'connecting' });
    let ws: WebSocket;
    try {
      ws = this.token
        ? new WebSocket(wsEndpoint(this.brokerUrl), ['bearer', this.token])
        : new WebSocket(wsEndpoint(this.brokerUrl));
    } catch {
      this.handlers.invalid(`bad broker URL ${this.brokerUrl}`);
      this.handlers.state({ kind: 'stopped' });
      return;
    }
    this.ws = ws;
    this.renewals.clear();
    const openedWith = this.token;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.refusals = 0;
      this.handlers.state({ kind: 'open' });
      this.send({ type: 'new', data: 'client' });
      // [ws-renew] Renewed while the handshake ran: the session holds the older token until it gets this one.
      if (this.token !== openedWith) this.setToken(this.token);
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== 'string') return;
      const parsed = parseBrokerToClientFrame(ev.data);
      if (!parsed.ok) {
        this.invalidFrames++;
        this.handlers.invalid(parsed.reason);
        return;
      }
      const msg = parsed.value;
      // [ws-renew] The answer to a renewal is the connection's business: the page sees no change.
      if ((msg.type === 'token-ok' || msg.type === 'error') && msg.id !== undefined && this.renewals.delete(msg.id)) {
        // Refused: the old token stays until the broker closes with 4401, and the page renews then.
        if (msg.type === 'error') {
          console.warn('mycelium: the broker refused the renewed token on the open connection:', msg.reason);
          return;
        }
        // A role the renewed token changed is the page's business (write controls).
      }
      this.handlers.message(msg);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = undefined;
      if (opened && ev.code === CloseCode.TokenExpired && this.handlers.tokenEnded?.()) {
        this.stopped = true;
        this.handlers.state({ kind: 'stopped' });
        return;
      }
      if (opened) this.retry(true);
      else this.afterFailedHandshake().catch((err) => console.warn('mycelium: reconnect failed', err));
    };
  }

  /**
   * A handshake that failed: the browser hides the HTTP status, so ask the broker's /healthz (no-cors: an
   * opaque answer still proves the broker is up). Up and refusing us means the token was refused (401).
   */
  private async afterFailedHandshake(): Promise<void> {
    const probe = this.brokerUrl
      .replace(/^ws(s?):/i, 'http$1:')
      .replace(/\/ws\/?$/, '')
      .replace(/\/+$/, '');
    let reachable = false;
    try {
      await fetch(`${probe}/healthz`, { mode: 'no-cors', cache: 'no-store' });
      reachable = true;
    } catch {
      reachable = false;
    }
    if (this.stopped) return;
    if (reachable && ++this.refusals >= REFUSALS_BEFORE_LOGIN) {
      this.stopped = true;
      this.handlers.state({ kind: 'refused' });
      return;
    }
    if (!reachable) this.refusals = 0;
    this.retry(reachable);
  }

  private retry(reachable: boolean): void {
    // Full exponential backoff with jitter, so a restarted broker is not hit by every screen at once.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const inMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt++;
    this.handlers.state({ kind: 'retrying', inMs, reachable });
    this.timer = window.setTimeout(() => this.open(), inMs);
  }
}
