// Scale-out: several rules workers share the nodes. Every worker hears every node event (it keeps the whole node
// table for ctx.node), and runs rules only for the nodes it owns: the owner of a uid is the live worker with the
// highest hash of (worker id, uid) (rendezvous hashing). Workers announce themselves on `myc.rules.alive`;
// one missing for three heartbeats is dropped, and only its nodes move (to the next-highest worker).
//
// Why not a queue group on the events: a queue group hands each message to any member, so two events of one
// node could run on two workers at once and finish out of order. Why not partition subjects: the brokers
// would have to publish each event twice (once per partition subject) or a router process would add a hop and
// a single point of failure. Hashing on the receiving side keeps one node on one worker with no extra hop;
// the cost is that every worker parses every event (cheap next to running a rule), and that while the set of
// workers changes (a heartbeat or two) a node's event may run on two workers or on none.
import type { Bus, BusSubscription } from '../bus/bus.ts';
import type { Logger } from '../common/log.ts';
import { parseJson } from '../protocol/schema.ts';
import { rulesSubjects } from './protocol.ts';

/** FNV-1a, 32 bits: fast, and spreads short strings well enough for ownership. */
function fnv1a(text: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // A final avalanche (murmur3's), so ids differing in one character do not rank alike.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class Membership {
  private readonly seen = new Map<string, number>();
  private members: Array<{ id: string; seed: number }> = [];
  private sub?: BusSubscription;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly bus: Pick<Bus, 'publish' | 'subscribe'>,
    readonly id: string,
    private readonly heartbeatMs: number,
    private readonly log: Logger,
  ) {
    this.recompute();
  }

  /** The live workers' ids, this one included. */
  get live(): string[] {
    return this.members.map((m) => m.id);
  }

  start(): void {
    this.sub = this.bus.subscribe(rulesSubjects.alive, (msg) => {
      const json = parseJson(Buffer.from(msg.data).toString());
      if (!json.ok || typeof json.value !== 'object' || json.value === null) return;
      const { id, leaving } = json.value as { id?: unknown; leaving?: unknown };
      if (typeof id !== 'string' || id === this.id || id.length > 256) return;
      if (leaving === true) {
        if (this.seen.delete(id)) this.recompute();
        return;
      }
      const known = this.seen.has(id);
      this.seen.set(id, Date.now());
      if (!known) {
        this.recompute();
        // A newcomer learns of us at once instead of at our next heartbeat.
        this.announce();
      }
    });
    this.announce();
    this.timer = setInterval(() => {
      this.announce();
      const limit = Date.now() - 3 * this.heartbeatMs;
      let changed = false;
      for (const [id, at] of this.seen) {
        if (at < limit) {
          this.seen.delete(id);
          changed = true;
        }
      }
      if (changed) this.recompute();
    }, this.heartbeatMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
    this.bus.publish(rulesSubjects.alive, Buffer.from(JSON.stringify({ id: this.id, leaving: true })));
  }

  /** True when this worker runs the rules for `key` (a uid, or `rule:<name>` for schedules). */
  owns(key: string): boolean {
    if (this.members.length === 1) return true;
    let best = '';
    let bestHash = -1;
    for (const m of this.members) {
      const h = fnv1a(key, m.seed);
      if (h > bestHash || (h === bestHash && m.id < best)) {
        bestHash = h;
        best = m.id;
      }
    }
    return best === this.id;
  }

  private announce(): void {
    this.bus.publish(rulesSubjects.alive, Buffer.from(JSON.stringify({ id: this.id })));
  }

  private recompute(): void {
    const ids = [this.id, ...this.seen.keys()].sort();
    this.members = ids.map((id) => ({ id, seed: fnv1a(id, 0x811c9dc5) }));
    this.log.info({ workers: ids.length }, 'rules workers changed');
  }
}
