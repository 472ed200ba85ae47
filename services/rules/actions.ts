// The service's side of a rule's ctx: every call a rule's worker makes arrives here as (op, args) and is
// checked like any outside input (rule code is admin-authored, but a bug in it must not reach the bus as
// garbage): identifiers by the identifier rule, values JSON and bounded, URLs against --http-allow.
import type { Bus } from '../bus/bus.ts';
import { BusError } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import type { NodeTable } from '../broker/node-table.ts';
import type { Json, NodeRecord } from '../protocol/messages.ts';
import { isIdentifier, parseJson, stringifySafe } from '../protocol/schema.ts';
import type { ExecClient } from './exec-binding.ts';
import { globMatches } from './glob.ts';
import type { RuleNode, WriteOutcome } from './rule.ts';
import type { VirtualNodes } from './virtual-nodes.ts';
import type { CallOp } from './worker.ts';

/** Largest value a rule may write or emit (as JSON). */
export const MAX_VALUE_BYTES = 64 * 1024;
/** Largest HTTP body a rule sends or receives. */
export const MAX_HTTP_BODY = 64 * 1024;
/** Most nodes one ctx.nodes() returns. */
export const MAX_NODES_ANSWER = 10_000;
/** Most points one ctx.history() returns. */
export const MAX_HISTORY_POINTS = 10_000;

export interface ActionOptions {
  /** Hosts a rule may call (`host`, `host:port` or `*.domain`); empty: none. */
  httpAllow: string[];
  httpTimeoutMs: number;
  writeTimeoutMs: number;
  historyTimeoutMs: number;
  /** The token subject and role console commands run as. */
  execAs: { sub: string; role: 'admin' | 'operator' };
}

export interface ActionDeps {
  bus: Pick<Bus, 'request' | 'publish' | 'subscribe'>;
  table: NodeTable;
  virtual: VirtualNodes;
  exec: ExecClient;
  /** Where this service publishes the writes its rules make, for the history (`myc.writes.<id>`). */
  auditSubject: string;
}

class RuleCallError extends Error {}

function identifier(what: string, v: unknown): string {
  const bad = isIdentifier(v);
  if (bad !== undefined) throw new RuleCallError(`${what} ${bad}`);
  return v as string;
}

function jsonValue(what: string, v: unknown): Json {
  const text = stringifySafe(v);
  if (text === undefined) throw new RuleCallError(`${what} must be JSON`);
  if (text.length > MAX_VALUE_BYTES) throw new RuleCallError(`${what} may be at most ${MAX_VALUE_BYTES} bytes of JSON`);
  return v as Json;
}

function plainNode(n: NodeRecord): RuleNode {
  const node: RuleNode = {
    uid: n.uid,
    gateway: n.gateway,
    status: n.status,
    lastSeen: n.lastSeen,
    resources: { ...n.resources },
  };
  if (n.reason !== undefined) node.reason = n.reason;
  return node;
}

/** True when `host` (lowercase, with port if any) is allowed by one of the --http-allow entries. */
export function hostAllowed(allow: readonly string[], hostname: string, port: string): boolean {
  const h = hostname.toLowerCase();
  for (const entry of allow) {
    const e = entry.toLowerCase();
    if (e === h || e === `${h}:${port}`) return true;
    if (e.startsWith('*.') && h.endsWith(e.slice(1))) return true;
  }
  return false;
}

export class RuleActions {
  constructor(
    private readonly options: ActionOptions,
    private readonly deps: ActionDeps,
  ) {}

  /** One ctx call of rule `rule`; rejects with a message the rule sees as an Error. */
  async call(rule: string, op: CallOp, args: unknown[]): Promise<unknown> {
    switch (op) {
      case 'node': {
        const n = this.deps.table.get(identifier('uid', args[0]));
        return n === undefined ? undefined : plainNode(n);
      }
      case 'nodes': {
        const glob = typeof args[0] === 'string' ? args[0] : '*';
        const out: RuleNode[] = [];
        for (const n of this.deps.table.all()) {
          if (globMatches(glob, n.uid)) out.push(plainNode(n));
          if (out.length >= MAX_NODES_ANSWER) break;
        }
        return out;
      }
      case 'write':
        return this.write(
          rule,
          identifier('uid', args[0]),
          identifier('resource', args[1]),
          jsonValue('payload', args[2]),
        );
      case 'emit': {
        const uid = identifier('uid', args[0]);
        const problem = this.deps.virtual.emit(uid, identifier('resource', args[1]), jsonValue('value', args[2]));
        if (problem !== undefined) throw new RuleCallError(problem);
        return undefined;
      }
      case 'http':
        return this.http(args[0], args[1]);
      case 'history':
        return this.history(identifier('uid', args[0]), identifier('resource', args[1]), args[2]);
      case 'exec':
        return this.exec(identifier('uid', args[0]), args[1], args[2], args[3]);
      default: {
        const never: never = op;
        throw new RuleCallError(`unknown call ${String(never)}`);
      }
    }
  }

  private async write(rule: string, uid: string, resource: string, payload: Json): Promise<WriteOutcome> {
    const at = Date.now();
    const node = this.deps.table.get(uid);
    let outcome: WriteOutcome;
    if (node === undefined) outcome = { result: 'error', reason: 'unknown node' };
    else if (this.deps.virtual.owns(uid)) outcome = { result: 'error', reason: 'a virtual node takes no writes' };
    else outcome = await this.send(node.gateway, uid, resource, payload);
    // The history records a rule's writes as it does anyone's, with the rule as the writer.
    const audit = stringifySafe({ at, uid, by: `rule:${rule}`, resource, payload, ...outcome });
    if (audit !== undefined) this.deps.bus.publish(this.deps.auditSubject, Buffer.from(audit));
    return outcome;
  }

  private async send(gateway: string, uid: string, endpoint: string, payload: Json): Promise<WriteOutcome> {
    const text = JSON.stringify({ uid, endpoint, payload });
    try {
      const reply = await this.deps.bus.request(
        subjects.write(gateway),
        Buffer.from(text),
        this.options.writeTimeoutMs,
      );
      const json = parseJson(Buffer.from(reply.data).toString());
      if (!json.ok || typeof json.value !== 'object' || json.value === null) {
        return { result: 'error', reason: 'bad reply from gateway' };
      }
      const v = json.value as { result?: unknown; reason?: unknown };
      const result = v.result;
      if (result !== 'ok' && result !== 'delivered' && result !== 'error' && result !== 'timeout') {
        return { result: 'error', reason: 'bad reply from gateway' };
      }
      return typeof v.reason === 'string' ? { result, reason: v.reason } : { result };
    } catch (err) {
      if (err instanceof BusError && err.code === 'no-responders')
        return { result: 'error', reason: 'gateway-unreachable' };
      if (err instanceof BusError && err.code === 'timeout') return { result: 'timeout', reason: 'no result in time' };
      return { result: 'error', reason: (err as Error).message };
    }
  }

  private async http(urlArg: unknown, reqArg: unknown) {
    if (typeof urlArg !== 'string') throw new RuleCallError('url must be a string');
    let url: URL;
    try {
      url = new URL(urlArg);
    } catch {
      throw new RuleCallError(`not a URL: ${urlArg.slice(0, 200)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RuleCallError('only http and https URLs');
    const port = url.port || (url.protocol === 'https:' ? '443' : '80');
    // URL() gives IPv6 hosts in brackets; --http-allow names them the same way.
    if (!hostAllowed(this.options.httpAllow, url.hostname, port)) {
      throw new RuleCallError(`host ${url.host} is not in --http-allow`);
    }
    const req = (typeof reqArg === 'object' && reqArg !== null ? reqArg : {}) as {
      method?: unknown;
      headers?: unknown;
      body?: unknown;
      timeoutMs?: unknown;
    };
    const method = typeof req.method === 'string' ? req.method.toUpperCase() : 'GET';
    if (!/^[A-Z]{1,16}$/.test(method)) throw new RuleCallError('bad method');
    const headers: Record<string, string> = {};
    if (typeof req.headers === 'object' && req.headers !== null) {
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
    }
    if (req.body !== undefined && typeof req.body !== 'string') throw new RuleCallError('body must be a string');
    if (typeof req.body === 'string' && Buffer.byteLength(req.body) > MAX_HTTP_BODY) {
      throw new RuleCallError(`body may be at most ${MAX_HTTP_BODY} bytes`);
    }
    const timeout =
      typeof req.timeoutMs === 'number' && req.timeoutMs > 0
        ? Math.min(req.timeoutMs, this.options.httpTimeoutMs)
        : this.options.httpTimeoutMs;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        ...(typeof req.body === 'string' ? { body: req.body } : {}),
        // A redirect could lead anywhere: the rule sees the 3xx and decides.
        redirect: 'manual',
        signal: AbortSignal.timeout(timeout),
      });
    } catch (err) {
      throw new RuleCallError(`http ${url.host}: ${(err as Error).message}`);
    }
    const body = await readCapped(res, MAX_HTTP_BODY);
    const outHeaders: Record<string, string> = {};
    res.headers.forEach((v, k) => {
      outHeaders[k] = v;
    });
    return { status: res.status, headers: outHeaders, body };
  }

  private async history(uid: string, resource: string, q: unknown) {
    const query = (typeof q === 'object' && q !== null ? q : {}) as Record<string, unknown>;
    const num = (k: string) =>
      typeof query[k] === 'number' && Number.isFinite(query[k]) ? (query[k] as number) : undefined;
    const to = num('to') ?? Date.now();
    const from = num('from') ?? to - 86_400_000;
    const limit = Math.min(Math.max(1, Math.floor(num('limit') ?? 1000)), MAX_HISTORY_POINTS);
    const request: Record<string, unknown> = { op: 'points', uid, resource, from, to, limit };
    const step = num('step');
    if (step !== undefined) request.step = step;
    if (typeof query.agg === 'string') request.agg = query.agg;
    let data: Uint8Array;
    try {
      data = (
        await this.deps.bus.request(
          subjects.historyQuery,
          Buffer.from(JSON.stringify(request)),
          this.options.historyTimeoutMs,
        )
      ).data;
    } catch (err) {
      if (err instanceof BusError && err.code === 'no-responders')
        throw new RuleCallError('no history service is running');
      throw new RuleCallError(`history: ${(err as Error).message}`);
    }
    const json = parseJson(Buffer.from(data).toString());
    if (!json.ok || typeof json.value !== 'object' || json.value === null)
      throw new RuleCallError('bad answer from history');
    const body = json.value as { points?: unknown; error?: unknown; message?: unknown };
    if (typeof body.error === 'string') throw new RuleCallError(`history: ${String(body.message)}`);
    return Array.isArray(body.points) ? body.points : [];
  }

  private async exec(uid: string, command: unknown, params: unknown, options: unknown) {
    if (typeof command !== 'string' || command.length === 0 || command.length > 256) {
      throw new RuleCallError('command must be a name of 1-256 characters');
    }
    const p: Record<string, string> = {};
    if (typeof params === 'object' && params !== null) {
      for (const [k, v] of Object.entries(params)) {
        if (typeof v !== 'string') throw new RuleCallError(`param ${k} must be a string`);
        p[identifier('param name', k)] = v;
      }
    }
    const node = this.deps.table.get(uid);
    if (node === undefined)
      return { status: 'error', code: null, output: '', truncated: false, reason: 'unknown node' };
    const o = (typeof options === 'object' && options !== null ? options : {}) as { timeoutMs?: unknown };
    return this.deps.exec.exec({
      uid,
      gateway: node.gateway,
      command,
      params: p,
      ...(typeof o.timeoutMs === 'number' && o.timeoutMs > 0 ? { timeoutMs: o.timeoutMs } : {}),
      requester: this.options.execAs,
    });
  }
}

async function readCapped(res: Response, max: number): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.length;
    if (size >= max) {
      await reader.cancel().catch(() => undefined);
      break;
    }
  }
  return Buffer.concat(chunks).subarray(0, max).toString();
}
