// The accounts pages' one way to call the broker's REST API (docs/accounts.md): JSON in and out, the token as
// `Authorization: Bearer` (never in a URL), and every refusal turned into a RestError with the broker's code and
// message, which the forms show as text. The cookie routes pass `credentials: 'include'`; nothing else does, so
// no other request carries the refresh cookie.

/** A refusal by the broker (or no broker): HTTP status (0 = unreachable), stable code, message. */
export class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface RestInit {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  token?: string;
  body?: unknown;
  headers?: Record<string, string>;
  credentials?: RequestCredentials;
}

/** Calls `base + path`; resolves with the answer's JSON object (or {} for an empty answer). */
export async function rest(base: string, path: string, init: RestInit = {}): Promise<Record<string, unknown>> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      credentials: init.credentials ?? 'omit',
      cache: 'no-store',
    });
  } catch {
    // Unreachable, or the browser refused the answer (this page's origin is not in the broker's --dashboard-origin).
    throw new RestError(0, 'MYC_ERR_UNAVAILABLE', 'the broker cannot be reached (or does not accept this page)');
  }
  let body: unknown;
  try {
    const text = await res.text();
    body = text === '' ? {} : JSON.parse(text);
  } catch {
    body = undefined;
  }
  const obj =
    typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
  if (res.ok) return obj;
  throw new RestError(
    res.status,
    typeof obj.error === 'string' ? obj.error : 'MYC_ERR_HTTP',
    typeof obj.message === 'string' ? obj.message : `HTTP ${res.status}`,
  );
}

/** The message a form shows for a failure: the broker's own words, or why it could not be asked. */
export function failureText(err: unknown): string {
  if (err instanceof RestError) return err.status === 0 ? err.message : `${err.message} (${err.status})`;
  return err instanceof Error ? err.message : String(err);
}

/** What the accounts pages are given: the broker, the current token, and who it says the caller is. */
export interface AccountContext {
  /** The broker's HTTP base (http://host:port). */
  base: string;
  token(): string | undefined;
  /** The caller's organisation id (the token's `org` claim); undefined for a system-wide token. */
  org(): string | undefined;
}

export interface OrgView {
  id: string;
  name: string;
}

/** `GET /api/v1/orgs`: the caller's organisation, or every one for a system-wide admin. */
export async function listOrgs(ctx: AccountContext): Promise<OrgView[]> {
  const body = await rest(ctx.base, '/api/v1/orgs', { token: ctx.token() });
  const out: OrgView[] = [];
  for (const o of Array.isArray(body.orgs) ? (body.orgs as unknown[]) : []) {
    const { id, name } = (o ?? {}) as { id?: unknown; name?: unknown };
    if (typeof id === 'string' && typeof name === 'string') out.push({ id, name });
  }
  return out;
}
