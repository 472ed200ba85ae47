// Observe (RFC 7641) of the resources whose link carries `obs`, and polling where observing fails: one set of
// observations and one of polls, renewed and repeated from the core's sweep (no timer per resource).
import type { ObserveReadStream } from 'coap';
import { decodeUtf8 } from './codec.ts';
import { type CoapContext, reportValue } from './context.ts';
import type { CoapNode } from './endpoint-index.ts';

/** RFC 7252 §5.10.5: Max-Age defaults to 60 s when a notification carries none. */
const DEFAULT_MAX_AGE_S = 60;

interface Observation {
  node: CoapNode;
  generation: number;
  name: string;
  /**
   * observe: an RFC 7641 registration. poll: the node refused or did not register the observation (node-coap
   * re-sends Observe with every Block2 follow-up, which libcoap answers 4.00), so a plain GET every poll interval.
   */
  mode: 'observe' | 'poll';
  /** The live registration; undefined while (re-)registering or after a failed attempt. */
  stream?: ObserveReadStream;
  /** A registration or poll is in flight. */
  registering: boolean;
  /** Last notification, or last registration attempt or poll: the sweep renews/polls after `refreshMs` of this. */
  lastNotify: number;
  /** Silence after which the registration is renewed, or the poll period. */
  refreshMs: number;
  /** Last polled value reported (polls report changes only). */
  last?: string;
}

export type ReadResult = 'ok' | 'unreadable' | 'no-answer';

export class Observations {
  private readonly observations = new Set<Observation>();
  private readonly polls = new Set<Observation>();
  /** Both sets, indexed by node. */
  private readonly byNode = new Map<CoapNode, Set<Observation>>();

  constructor(private readonly ctx: CoapContext) {}

  get observing(): number {
    return this.observations.size;
  }

  get polling(): number {
    return this.polls.size;
  }

  /**
   * Observes one resource found by discovery: registered, or (refused) read and polled. 'no-answer' when the
   * node did not answer either way.
   */
  async start(node: CoapNode, generation: number, name: string): Promise<ReadResult> {
    const o: Observation = {
      node,
      generation,
      name,
      mode: 'observe',
      registering: false,
      lastNotify: Date.now(),
      refreshMs: this.ctx.config.observeRefreshMs,
    };
    const result = await this.register(o);
    if (result !== 'refused') return result === 'observing' ? 'ok' : 'no-answer';
    // Not observable after all (or not the way node-coap asks): read it, and poll it if that works.
    return this.poll(o);
  }

  /** Renews silent observations and runs due polls (from the core's sweep). */
  tick(now: number): void {
    const log = this.ctx.log;
    for (const o of this.observations) {
      // A failed renewal stays in the set (stream undefined) and is tried again one period later.
      if (!o.registering && now - o.lastNotify > o.refreshMs) {
        this.ctx.counters.observeRenewals.inc();
        log.debug({ uid: o.node.uid, resource: o.name }, 'observation silent; registering again');
        this.register(o)
          // A node that now refuses the observation (rebooted with other firmware, say) is polled instead.
          .then((result) => (result === 'refused' ? this.poll(o) : undefined))
          .catch((err: unknown) => log.warn({ err, uid: o.node.uid }, 'observe renewal failed'));
      }
    }
    for (const o of this.polls) {
      if (!o.registering && now - o.lastNotify >= o.refreshMs) {
        this.poll(o).catch((err: unknown) => log.warn({ err, uid: o.node.uid }, 'poll failed'));
      }
    }
  }

  /** The node's observations are void (reset, out, moved): forget their tokens. */
  drop(node: CoapNode): void {
    const set = this.byNode.get(node);
    if (set === undefined) return;
    for (const o of set) this.close(o);
    this.byNode.delete(node);
  }

  clear(): void {
    for (const o of this.observations) o.stream?.close();
    this.observations.clear();
    this.polls.clear();
    this.byNode.clear();
  }

  /**
   * (Re-)registers an observation (RFC 7641 §3.1: GET with Observe 0) and keeps it tracked while registered.
   * 'no-answer' when the node does not answer; 'refused' for an error code or an answer without Observe (§3.2:
   * the node did not register us): the caller then reads and polls the resource instead.
   */
  private async register(o: Observation): Promise<'observing' | 'refused' | 'no-answer'> {
    const { ctx } = this;
    const { node, generation, name } = o;
    if (!ctx.alive(node, generation)) return 'no-answer';
    // Forget the old token first; the node's next notification for it gets a RST and it drops it (§3.6).
    o.stream?.close();
    o.stream = undefined;
    o.registering = true;
    o.lastNotify = Date.now();
    ctx.core.noteOut();
    const res = await ctx.transport.observe(ctx.target(node), `/${name}`);
    o.registering = false;
    if (res === undefined) return 'no-answer';
    if (!ctx.alive(node, generation)) {
      res.close();
      return 'no-answer';
    }
    if (res.code !== '2.05' || typeof res.headers.Observe !== 'number') {
      ctx.log.debug({ uid: node.uid, resource: name, code: res.code }, 'observation refused; polling instead');
      this.close(o);
      res.close();
      return 'refused';
    }
    const maxAge = typeof res.headers['Max-Age'] === 'number' ? res.headers['Max-Age'] : DEFAULT_MAX_AGE_S;
    // Renew after the longer of the configured silence and the freshness the node promised.
    o.refreshMs = Math.max(ctx.config.observeRefreshMs, maxAge === DEFAULT_MAX_AGE_S ? 0 : maxAge * 1000);
    o.stream = res;
    o.lastNotify = Date.now();
    this.track(o);
    ctx.counters.observeRegistrations.inc();
    reportValue(ctx, node, name, '2.05', res.payload);
    res.on('data', (chunk: Buffer) => {
      if (o.stream !== res) return;
      o.lastNotify = Date.now();
      node.lastSeen = o.lastNotify;
      ctx.counters.notifications.inc();
      ctx.core.noteIn();
      if (ctx.alive(node, generation)) reportValue(ctx, node, name, '2.05', chunk);
    });
    return 'observing';
  }

  /**
   * One plain GET (node-coap reassembles Block2 answers, RFC 7959) of a resource that could not be observed.
   * A readable answer turns it into a poll, repeated every --poll-interval-ms; changed values are reported.
   */
  private async poll(o: Observation): Promise<ReadResult> {
    const { ctx } = this;
    const { node, generation, name } = o;
    if (!ctx.alive(node, generation)) return 'no-answer';
    o.registering = true;
    o.lastNotify = Date.now();
    ctx.counters.polls.inc();
    ctx.core.noteOut();
    const answer = await ctx.transport.request(ctx.target(node), 'GET', `/${name}`);
    o.registering = false;
    o.lastNotify = Date.now();
    if (!ctx.alive(node, generation)) return 'no-answer';
    if (answer.kind !== 'response') return 'no-answer'; // a polling resource is tried again next period
    node.lastSeen = o.lastNotify;
    ctx.core.noteIn();
    if (answer.code !== '2.05') {
      reportValue(ctx, node, name, answer.code, answer.payload);
      this.close(o);
      return 'unreadable';
    }
    const text = decodeUtf8(answer.payload);
    if (text !== o.last) o.last = reportValue(ctx, node, name, answer.code, answer.payload);
    if (o.mode !== 'poll') {
      o.mode = 'poll';
      o.refreshMs = ctx.config.pollIntervalMs;
      this.track(o);
    }
    return 'ok';
  }

  private track(o: Observation): void {
    (o.mode === 'poll' ? this.polls : this.observations).add(o);
    let set = this.byNode.get(o.node);
    if (set === undefined) {
      set = new Set();
      this.byNode.set(o.node, set);
    }
    set.add(o);
  }

  private close(o: Observation): void {
    this.observations.delete(o);
    this.polls.delete(o);
    this.byNode.get(o.node)?.delete(o);
    // Closing forgets the token; the node's next notification gets a RST and it drops us (RFC 7641 §3.6).
    o.stream?.close();
    o.stream = undefined;
  }
}
