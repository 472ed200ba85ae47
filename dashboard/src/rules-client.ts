// The page's client of the broker's rules routes (docs/rules.md, "REST API"): the list, enable and disable, a
// rule's source and saving it. The token goes in `Authorization: Bearer` (never in a URL), as the history client
// sends it. Answers are checked before use; every string in them may come from a rule's author or a device (an
// error message quotes what a device sent), so the page only ever sets them as text.
import type { RuleRecord } from '../../services/rules/protocol.ts';
import { brokerHttpBase } from './history-client.ts';

export type { RuleRecord };
export type RunRecord = RuleRecord['recent'][number];

/** A refusal: HTTP status, stable code (`MYC_ERR_BAD_RULE`…) and the message, as the broker sent them. */
export class RulesError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Enough of a rule record to draw it: the broker validates the whole answer against its schema already. */
function isRecord(v: unknown): v is RuleRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    typeof r.name === 'string' &&
    typeof r.status === 'string' &&
    Array.isArray(r.triggers) &&
    Array.isArray(r.recent) &&
    typeof r.runs === 'number' &&
    typeof r.errors === 'number'
  );
}

export class RulesClient {
  private readonly base: string;

  constructor(
    brokerUrl: string,
    private readonly token: () => string | undefined,
  ) {
    this.base = `${brokerHttpBase(brokerUrl)}/api/v1/rules`;
  }

  async list(signal?: AbortSignal): Promise<RuleRecord[]> {
    const body = await this.call('GET', '', undefined, signal);
    if (!Array.isArray(body)) throw new RulesError(502, 'MYC_ERR_BAD_ANSWER', 'the answer is not a list');
    return body.filter(isRecord);
  }

  async setEnabled(name: string, enabled: boolean): Promise<RuleRecord> {
    return this.rule(await this.call('POST', `/${encodeURIComponent(name)}/${enabled ? 'enable' : 'disable'}`));
  }

  async source(name: string): Promise<string> {
    const body = await this.call('GET', `/${encodeURIComponent(name)}/source`);
    const source = (body as { source?: unknown } | null)?.source;
    if (typeof source !== 'string') throw new RulesError(502, 'MYC_ERR_BAD_ANSWER', 'no source in the answer');
    return source;
  }

  /** Saves a source: a 400 `MYC_ERR_BAD_RULE` says why it does not compile, load or declare this name. */
  async save(name: string, source: string): Promise<RuleRecord> {
    return this.rule(await this.call('PUT', `/${encodeURIComponent(name)}/source`, source));
  }

  private rule(body: unknown): RuleRecord {
    if (!isRecord(body)) throw new RulesError(502, 'MYC_ERR_BAD_ANSWER', 'the answer is not a rule');
    return body;
  }

  private async call(method: string, path: string, body?: string, signal?: AbortSignal): Promise<unknown> {
    const token = this.token();
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'text/plain; charset=utf-8';
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, { method, headers, body, cache: 'no-store', signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      // Unreachable broker, or a preflight the broker refused (a cross-origin PUT or POST it does not allow).
      throw new RulesError(0, 'MYC_ERR_UNAVAILABLE', 'the broker cannot be reached');
    }
    let json: unknown;
    try {
      json = await res.json();
    } catch {
      json = undefined;
    }
    if (res.ok) return json;
    const e = (json ?? {}) as { error?: unknown; message?: unknown };
    throw new RulesError(
      res.status,
      typeof e.error === 'string' ? e.error : 'MYC_ERR_HTTP',
      typeof e.message === 'string' ? e.message : `HTTP ${res.status}`,
    );
  }
}
