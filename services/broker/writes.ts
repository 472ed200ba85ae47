// Writes travel as bus requests to `myc.write.<gateway>`; the broker holding that gateway's connection
// answers, so a client on one broker can write to a node whose gateway is connected to another.
import { randomUUID } from 'node:crypto';
import { type Bus, BusError, type BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import type { BrWrite, GwResult, Json, WriteOutcome } from '../protocol/messages.ts';
import { isWriteOutcome } from '../protocol/frames.ts';
import { parseJson, stringifySafe } from '../protocol/schema.ts';
import type { BrokerCounters } from './ports.ts';

export interface WriteRequest {
  uid: string;
  endpoint: string;
  payload: Json;
}

/** A gateway connection as the router sees it: writes go out through it, results come back naming it. */
export interface WriteTarget {
  readonly gatewayId: string;
  send(msg: BrWrite): void;
}

export interface WriteRouterDeps {
  bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>;
  counters: Pick<BrokerCounters, 'writes' | 'writeSeconds'>;
  /** --write-timeout-ms */
  writeTimeoutMs: number;
  /** Where each write and its result is published for the history (`myc.writes.<broker>`); none when absent. */
  auditSubject?: string;
}

interface Pending {
  session: WriteTarget;
  reply: string;
  timer: NodeJS.Timeout;
}

export class WriteRouter {
  private served = new Map<WriteTarget, BusSubscription>();
  private pending = new Map<string, Pending>();

  constructor(private readonly deps: WriteRouterDeps) {}

  /**
   * Sends a write to the gateway that owns the node, wherever it is connected, and waits for its result.
   * `by` (the token subject that asked) goes with the result to the history.
   */
  async write(gatewayId: string, request: WriteRequest, by?: string): Promise<WriteOutcome> {
    const at = Date.now();
    const started = performance.now();
    const outcome = await this.send(gatewayId, request);
    this.deps.counters.writeSeconds.observe((performance.now() - started) / 1000);
    this.audit(at, request, outcome, by);
    return outcome;
  }

  private audit(at: number, request: WriteRequest, outcome: WriteOutcome, by: string | undefined): void {
    if (this.deps.auditSubject === undefined) return;
    const text = stringifySafe({
      at,
      uid: request.uid,
      by: by ?? 'unknown',
      resource: request.endpoint,
      payload: request.payload,
      ...outcome,
    });
    if (text !== undefined) this.deps.bus.publish(this.deps.auditSubject, Buffer.from(text));
  }

  private async send(gatewayId: string, request: WriteRequest): Promise<WriteOutcome> {
    // Never throws (finding 1 of issue 10): a payload that cannot be serialized is an error outcome, not a
    // rejected promise; parse points cap depth, so this is the last line of defence.
    const text = stringifySafe(request);
    if (text === undefined) {
      this.deps.counters.writes('error').inc();
      return { result: 'error', reason: 'payload cannot be serialized' };
    }
    let outcome: WriteOutcome;
    try {
      const reply = await this.deps.bus.request(subjects.write(gatewayId), Buffer.from(text), this.deps.writeTimeoutMs);
      const json = parseJson(Buffer.from(reply.data).toString());
      outcome =
        json.ok && isWriteOutcome(json.value) ? json.value : { result: 'error', reason: 'bad reply from gateway' };
    } catch (err) {
      if (err instanceof BusError && err.code === 'no-responders') {
        outcome = { result: 'error', reason: 'gateway-unreachable' };
      } else if (err instanceof BusError && err.code === 'timeout') {
        outcome = { result: 'timeout', reason: 'no result in time' };
      } else {
        outcome = { result: 'error', reason: 'bad reply from gateway' };
      }
    }
    this.deps.counters.writes(outcome.result).inc();
    return outcome;
  }

  serveGateway(session: WriteTarget): void {
    const sub = this.deps.bus.subscribe(subjects.write(session.gatewayId), (msg) => {
      if (!msg.reply) return;
      const json = parseJson(Buffer.from(msg.data).toString());
      if (!json.ok || typeof json.value !== 'object' || json.value === null) return;
      const request = json.value as WriteRequest;
      const id = randomUUID();
      const timer = setTimeout(() => this.pending.delete(id), this.deps.writeTimeoutMs);
      timer.unref();
      this.pending.set(id, { session, reply: msg.reply, timer });
      session.send({ type: 'write', id, uid: request.uid, endpoint: request.endpoint, payload: request.payload });
    });
    this.served.set(session, sub);
  }

  /**
   * A newer connection of the same gateway replaced `previous`: only the new one takes writes from now on, and
   * writes already sent on the old one may complete through the new one (the gateway answers on its current link).
   */
  handOver(previous: WriteTarget, next: WriteTarget): void {
    this.served.get(previous)?.unsubscribe();
    this.served.delete(previous);
    for (const p of this.pending.values()) if (p.session === previous) p.session = next;
  }

  unserveGateway(session: WriteTarget): void {
    this.served.get(session)?.unsubscribe();
    this.served.delete(session);
    for (const [id, p] of this.pending) {
      if (p.session === session) this.finish(id, p, { result: 'error', reason: 'gateway-lost' });
    }
  }

  /** A gateway reported a write's result; false if the id is unknown, expired, or not this gateway's. */
  complete(session: WriteTarget, msg: GwResult): boolean {
    const p = this.pending.get(msg.id);
    if (p === undefined || p.session !== session) return false;
    this.finish(
      msg.id,
      p,
      msg.reason === undefined ? { result: msg.result } : { result: msg.result, reason: msg.reason },
    );
    return true;
  }

  stop(): void {
    for (const [id, p] of this.pending) this.finish(id, p, { result: 'error', reason: 'broker shutting down' });
    for (const sub of this.served.values()) sub.unsubscribe();
    this.served.clear();
  }

  private finish(id: string, p: Pending, outcome: WriteOutcome): void {
    clearTimeout(p.timer);
    this.pending.delete(id);
    this.deps.bus.publish(p.reply, Buffer.from(JSON.stringify(outcome)));
  }
}
