// Where the page keeps its token: taken from a `#token=<jwt>` link (a fragment never reaches a server log)
// or pasted; kept in sessionStorage, or localStorage when the user asks the page to remember it.
const KEY = 'mycelium.token';

export function takeTokenFromFragment(): string | undefined {
  return takeFromFragment('token');
}

/** Takes `#<name>=<value>` out of the address (a token, an invitation: `#invite=myi_…`) and returns the value. */
export function takeFromFragment(name: string): string | undefined {
  const hash = window.location.hash;
  if (!hash.startsWith('#')) return undefined;
  const params = new URLSearchParams(hash.slice(1));
  const token = params.get(name)?.trim();
  if (!token) return undefined;
  params.delete(name);
  const rest = params.toString();
  // Remove the token from the address bar and history, so it is not shared with a screenshot or a copy.
  history.replaceState(null, '', `${window.location.pathname}${window.location.search}${rest ? `#${rest}` : ''}`);
  return token;
}

export function loadToken(): string | undefined {
  return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY) ?? undefined;
}

export function saveToken(token: string, remember: boolean): void {
  sessionStorage.setItem(KEY, token);
  if (remember) localStorage.setItem(KEY, token);
  else localStorage.removeItem(KEY);
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** The unverified claims of a JWT, to show its expiry; the broker is the one that checks it. */
export function tokenClaims(token: string): { exp?: number; role?: string; sub?: string; org?: string } | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const claims: unknown = JSON.parse(json);
    return typeof claims === 'object' && claims !== null ? (claims as { exp?: number }) : undefined;
  } catch {
    return undefined;
  }
}

export function tokenExpired(token: string, now = Date.now()): boolean {
  const exp = tokenClaims(token)?.exp;
  return typeof exp === 'number' && exp * 1000 < now;
}
