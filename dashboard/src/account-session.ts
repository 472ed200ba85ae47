// A signed-in session (docs/accounts.md, "Tokens and keys"): `POST /api/v1/login` answers a short-lived access
// token and sets the refresh credential as an httpOnly cookie the page never sees; the session renews the token
// silently before it expires with `POST /api/v1/refresh` (the cookie plus the X-Mycelium-Refresh header that
// makes the request CSRF-safe), and `POST /api/v1/logout` revokes the cookie.
//
// Nothing secret is stored by the page: the password goes into one request and is dropped, the access token
// lives in memory only. The only thing kept (localStorage) is a flag saying "this browser signed in", so a reload
// or a new tab resumes with one refresh instead of asking again, and pages that never signed in never call it.
// Tabs share the cookie, and each refresh spends it (rotation): two tabs refreshing at once would race, so
// refreshes take a Web Lock (navigator.locks, where the browser has it) and run one at a time.
import { RestError, rest } from './account-rest.ts';

const SIGNED_IN_KEY = 'mycelium.account';
const LOCK = 'mycelium.refresh';
export const REFRESH_HEADER = 'x-mycelium-refresh';
/** Renew this long before expiry at most (a quarter of the lifetime for short ones). */
export const RENEW_BEFORE_MS = 60_000;
/** Retry a failed renewal (broker unreachable) after this, doubling up to the maximum. */
export const RENEW_RETRY_MS = 2_000;
export const RENEW_RETRY_MAX_MS = 30_000;

export interface SessionHandlers {
  /** A new access token (sign-in or renewal). */
  token(token: string): void;
  /** The session is over (refresh refused: signed out elsewhere, disabled, expired); `why` is for the user. */
  ended(why: string): void;
}

/** When to renew a token that lives `expiresInS` seconds. */
export function renewDelayMs(expiresInS: number): number {
  const life = expiresInS * 1000;
  return Math.max(1_000, life - Math.min(RENEW_BEFORE_MS, life / 4));
}

function remembered(): boolean {
  try {
    return localStorage.getItem(SIGNED_IN_KEY) === '1';
  } catch {
    return false;
  }
}

function remember(on: boolean): void {
  try {
    if (on) localStorage.setItem(SIGNED_IN_KEY, '1');
    else localStorage.removeItem(SIGNED_IN_KEY);
  } catch {
    // Storage disabled: a reload asks to sign in again, nothing worse.
  }
}

interface Session {
  accessToken: string;
  expiresIn: number;
}

function session(body: Record<string, unknown>): Session {
  if (typeof body.accessToken !== 'string' || typeof body.expiresIn !== 'number' || !(body.expiresIn > 0)) {
    throw new RestError(502, 'MYC_ERR_BAD_ANSWER', 'the broker answered no token');
  }
  return { accessToken: body.accessToken, expiresIn: body.expiresIn };
}

export class AccountSession {
  private timer?: number;
  private retryMs = RENEW_RETRY_MS;
  private refreshing?: Promise<string>;
  /** Bumped by sign-out: a renewal that was in flight must not revive the session. */
  private generation = 0;
  active = false;

  constructor(
    /** The broker's HTTP base (http://host:port). */
    private readonly base: string,
    private readonly handlers: SessionHandlers,
  ) {}

  /** Signs in; resolves with the access token, rejects with the broker's refusal (wrong password: 401). */
  async signIn(username: string, password: string): Promise<string> {
    const s = session(
      await rest(this.base, '/api/v1/login', {
        method: 'POST',
        body: { username, password },
        credentials: 'include',
      }),
    );
    this.generation++;
    this.active = true;
    remember(true);
    this.schedule(s.expiresIn);
    return s.accessToken;
  }

  /** At page load: a browser that signed in before gets a token from its cookie, without a password. */
  async resume(): Promise<string | undefined> {
    if (!remembered()) return undefined;
    this.active = true;
    try {
      return await this.refresh();
    } catch {
      return undefined;
    }
  }

  /**
   * A new access token now (the renewal timer, or a WebSocket closed with 4401). Concurrent calls share one
   * request. A refusal (401) ends the session; an unreachable broker rejects and keeps it.
   */
  refresh(): Promise<string> {
    this.refreshing ??= this.locked(() => this.doRefresh()).finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** Revokes the refresh cookie on the broker and forgets the session; never fails (signing out must work offline). */
  async signOut(): Promise<void> {
    // A browser that signed in before (the flag) may hold a cookie even when this page did not resume it.
    const hadSession = this.active || remembered();
    this.stop();
    remember(false);
    if (!hadSession) return;
    try {
      await rest(this.base, '/api/v1/logout', {
        method: 'POST',
        headers: { [REFRESH_HEADER]: '1' },
        credentials: 'include',
      });
    } catch (err) {
      console.warn('mycelium: sign-out did not reach the broker', err instanceof Error ? err.message : err);
    }
  }

  /** Forgets the session here without telling the broker (another credential took over). */
  stop(): void {
    this.generation++;
    this.active = false;
    clearTimeout(this.timer);
  }

  private async doRefresh(): Promise<string> {
    const generation = this.generation;
    let s: Session;
    try {
      s = session(
        await rest(this.base, '/api/v1/refresh', {
          method: 'POST',
          headers: { [REFRESH_HEADER]: '1' },
          credentials: 'include',
        }),
      );
    } catch (err) {
      if (generation !== this.generation) throw err;
      if (err instanceof RestError && (err.status === 401 || err.status === 403)) {
        this.stop();
        remember(false);
        this.handlers.ended('Your session has ended (signed out, expired or disabled). Sign in again.');
      } else {
        this.retryLater();
      }
      throw err;
    }
    if (generation !== this.generation) throw new RestError(0, 'MYC_ERR_SIGNED_OUT', 'signed out meanwhile');
    this.retryMs = RENEW_RETRY_MS;
    this.schedule(s.expiresIn);
    this.handlers.token(s.accessToken);
    return s.accessToken;
  }

  private schedule(expiresInS: number): void {
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.renew(), renewDelayMs(expiresInS));
  }

  private retryLater(): void {
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.renew(), this.retryMs);
    this.retryMs = Math.min(RENEW_RETRY_MAX_MS, this.retryMs * 2);
  }

  private renew(): void {
    if (!this.active) return;
    this.refresh().catch(() => undefined); // handled in doRefresh: ended, or retried
  }

  /** Runs `fn` under the page-wide refresh lock where Web Locks exist (https and localhost), else directly. */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const locks = (navigator as Navigator & { locks?: LockManager }).locks;
    return locks === undefined ? fn() : (locks.request(LOCK, fn) as Promise<T>);
  }
}
