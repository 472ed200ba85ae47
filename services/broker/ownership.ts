// Which gateway owns a node uid: one decision for the whole cluster. See docs/architecture.md, "Node ownership".
//
// A uid belongs to the gateway that first announced it, until an operator releases it (DELETE /api/v1/nodes/:uid).
// One exception keeps real devices working: a uid that its node proved with a token (GwNew.proof === 'token') moves
// to another gateway when that announcement is token-proven too and the node is offline (a WebSocket node
// reconnecting through another gateway worker). A proven uid never goes to an unproven announcement.
//
// Two registries behind one interface: LocalOwnership (a Map; decisions in one process are already serial, so it
// answers synchronously) for the in-process bus, and KvOwnership (a key-value bucket with compare-and-set, a
// JetStream KV bucket on NATS) so that two brokers deciding at the same moment cannot both say yes.
import type { Bus } from '../bus/bus.ts';
import { type KvBucket, KvConflictError, KvUnavailableError, kvKey } from '../bus/kv.ts';
import type { OptionTable } from '../common/config.ts';
import type { Logger } from '../common/log.ts';
import type { NodeRecord, NodeStatus } from '../protocol/messages.ts';
import type { NodeEvent, OwnerLost } from './node-table.ts';

export type Proof = 'token';

/** Who holds a uid. `proof` is sticky: once a node proved its uid, the claim stays proven until released. */
export interface Claim {
  gateway: string;
  proof?: Proof;
}

export type RefusalWhy =
  /** The node is online on its owning gateway. */
  | 'online'
  /** The owner proved the uid with a token; this announcement did not. */
  | 'proof-required'
  /** The uid was never proven: only an operator can hand it to another gateway. */
  | 'operator-required'
  /** Another gateway claimed the uid at the same moment and won. */
  | 'lost-race';

export type ClaimResult =
  | { ok: true; claim: Claim; moved?: { from: string } }
  | { ok: false; owner: string; why: RefusalWhy };

export interface OwnershipRegistry {
  readonly kind: 'local' | 'cluster';
  start(): Promise<void>;
  /**
   * Decides whether `gateway` may own `uid`. Synchronous where the registry can decide at once (LocalOwnership);
   * a promise when the decision needs the cluster. Rejects only when the store is unavailable.
   */
  claim(uid: string, gateway: string, proof: Proof | undefined): ClaimResult | Promise<ClaimResult>;
  /** Forgets the claim on `uid`; with `only`, only while that claim still matches it. */
  release(uid: string, only?: ReleaseIf): Promise<void>;
  /** The current claim, if any. */
  owner(uid: string): Promise<Claim | undefined>;
}

/** A conditional release: only while `owner` holds the uid (and, with `unproven`, only if it was never proven). */
export interface ReleaseIf {
  owner: string;
  unproven?: boolean;
}

function matches(claim: Claim | undefined, only: ReleaseIf | undefined): boolean {
  if (only === undefined) return true;
  return claim?.gateway === only.owner && (!only.unproven || claim.proof === undefined);
}

/** The node's status as this broker's node table sees it (undefined: not in the table). */
export type StatusOf = (uid: string) => NodeStatus | undefined;

export const ownershipOptions = {
  localOwnership: {
    type: 'boolean',
    default: false,
    description:
      'on NATS, decide node ownership in each broker alone instead of in the JetStream bucket (for a server ' +
      'without JetStream; two brokers may then both accept one uid)',
  },
  ownershipTimeoutMs: {
    type: 'number',
    default: 5000,
    min: 100,
    description: 'how long a node announcement waits for the cluster-wide ownership decision (JetStream)',
  },
  ownershipConcurrency: {
    type: 'number',
    default: 256,
    min: 1,
    description:
      'ownership decisions one broker has in flight at once on JetStream; more wait their turn (a gateway ' +
      'replaying 20,000 nodes at once would otherwise time out)',
  },
  maxClaimQueue: {
    type: 'number',
    default: 10000,
    min: 1,
    description:
      'frames a gateway may send for nodes whose ownership is still being decided before its link is closed (1013)',
  },
} as const satisfies OptionTable;

/** The JetStream KV bucket that holds one key per claimed uid. */
export const OWNERSHIP_BUCKET = 'mycelium-owners';

/**
 * The rule, on its own so both registries apply the same one. `current` is the claim on record, `status` the
 * node's status. 'keep': already this gateway's, nothing to write; 'upgrade': this gateway's, now proven.
 */
export type Decision = 'create' | 'keep' | 'upgrade' | 'move' | { refuse: RefusalWhy };

export function decide(
  current: Claim | undefined,
  gateway: string,
  proof: Proof | undefined,
  status: NodeStatus | undefined,
): Decision {
  if (current === undefined) return 'create';
  if (current.gateway === gateway) return proof !== undefined && current.proof === undefined ? 'upgrade' : 'keep';
  if (current.proof === undefined) return { refuse: 'operator-required' };
  if (proof === undefined) return { refuse: 'proof-required' };
  // Not in the table (evicted, or a broker that has not seen it yet) counts as offline: only the claim matters.
  return status === 'online' ? { refuse: 'online' } : 'move';
}

function applied(decision: Exclude<Decision, { refuse: RefusalWhy }>, current: Claim | undefined, next: Claim) {
  const result: ClaimResult = { ok: true, claim: next };
  if (decision === 'move' && current !== undefined) result.moved = { from: current.gateway };
  return result;
}

function nextClaim(current: Claim | undefined, gateway: string, proof: Proof | undefined): Claim {
  const p = proof ?? (current?.gateway === gateway ? current.proof : undefined);
  return p === undefined ? { gateway } : { gateway, proof: p };
}

/** In one process: a Map, decided synchronously. */
export class LocalOwnership implements OwnershipRegistry {
  readonly kind = 'local' as const;
  private readonly claims = new Map<string, Claim>();

  /**
   * `shared`: brokers on a shared bus that each decide alone (--local-ownership), said loudly at start. Each
   * broker's map then only knows its own gateways' claims, so a uid with no claim here is judged by the node table
   * (replicated by bus events): the pre-cluster rule, with its race window.
   */
  constructor(
    private readonly statusOf: StatusOf,
    private readonly shared?: { log: Logger; recordOf: (uid: string) => NodeRecord | undefined },
  ) {}

  async start(): Promise<void> {
    this.shared?.log.warn(
      'node ownership is decided by each broker alone (--local-ownership): two gateways on two brokers ' +
        'announcing one uid at the same moment may both be accepted; enable JetStream (nats-server -js) instead',
    );
  }

  claim(uid: string, gateway: string, proof: Proof | undefined): ClaimResult {
    const current = this.claims.get(uid) ?? this.fromTable(uid);
    const decision = decide(current, gateway, proof, this.statusOf(uid));
    if (typeof decision === 'object') return { ok: false, owner: current?.gateway ?? '', why: decision.refuse };
    const next = decision === 'keep' && current !== undefined ? current : nextClaim(current, gateway, proof);
    this.claims.set(uid, next);
    return applied(decision, current, next);
  }

  async release(uid: string, only?: ReleaseIf): Promise<void> {
    if (matches(this.claims.get(uid), only)) this.claims.delete(uid);
  }

  private fromTable(uid: string): Claim | undefined {
    const node = this.shared?.recordOf(uid);
    if (node === undefined) return undefined;
    return node.proof === undefined ? { gateway: node.gateway } : { gateway: node.gateway, proof: node.proof };
  }

  async owner(uid: string): Promise<Claim | undefined> {
    return this.claims.get(uid);
  }

  get size(): number {
    return this.claims.size;
  }
}

/** Shortest pause between two re-opens of the ownership bucket after store failures. */
const REOPEN_INTERVAL_MS = 1000;

/** A compare-and-set that lost is read and decided again this many times before the claim gives up. */
const MAX_ATTEMPTS = 4;

/**
 * For a cluster: one key per uid in a bucket every broker shares; every change is a compare-and-set on the
 * revision read, so of two brokers deciding at once one write fails. The loser reads again and decides again,
 * except that it never moves a uid someone else has just claimed: that would hand the node to the second
 * announcement, which is what finding 11 was about.
 */
export class KvOwnership implements OwnershipRegistry {
  readonly kind = 'cluster' as const;
  private kv?: KvBucket;
  private readonly slots: Slots;
  private reopenedAt = 0;

  constructor(
    private readonly open: () => Promise<KvBucket>,
    private readonly statusOf: StatusOf,
    private readonly log: Logger,
    concurrency: number = ownershipOptions.ownershipConcurrency.default,
  ) {
    this.slots = new Slots(concurrency);
  }

  async start(): Promise<void> {
    try {
      this.kv ??= await this.open();
    } catch (err) {
      // Refusing to start is the safe choice: without one store, two brokers can hand one uid to two gateways.
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(
        `node ownership needs the JetStream key-value bucket ${OWNERSHIP_BUCKET} on NATS: ${reason}. ` +
          'Start nats-server with JetStream (-js), or pass --local-ownership to let each broker decide alone.',
        { cause: err },
      );
    }
  }

  claim(uid: string, gateway: string, proof: Proof | undefined): Promise<ClaimResult> {
    return this.slots.run(() => this.withBucket(() => this.decideInStore(uid, gateway, proof)));
  }

  private async decideInStore(uid: string, gateway: string, proof: Proof | undefined): Promise<ClaimResult> {
    const kv = this.bucket();
    const key = kvKey(uid);
    let contended = false;
    for (let attempt = 1; ; attempt++) {
      const entry = await kv.get(key);
      const current = entry === undefined ? undefined : this.parse(uid, entry.value);
      let decision = decide(current, gateway, proof, this.statusOf(uid));
      if (decision === 'move' && contended) decision = { refuse: 'lost-race' };
      if (typeof decision === 'object') return { ok: false, owner: current?.gateway ?? '', why: decision.refuse };
      if (decision === 'keep' && current !== undefined) return { ok: true, claim: current };
      const next = nextClaim(current, gateway, proof);
      const value = encodeClaim(next);
      try {
        if (entry === undefined) await kv.create(key, value);
        else await kv.update(key, value, entry.revision);
        return applied(decision, current, next);
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err;
        contended = true;
        if (attempt >= MAX_ATTEMPTS) return { ok: false, owner: current?.gateway ?? '', why: 'lost-race' };
      }
    }
  }

  release(uid: string, only?: ReleaseIf): Promise<void> {
    return this.slots.run(() => this.withBucket(() => this.releaseInStore(uid, only)));
  }

  private async releaseInStore(uid: string, only?: ReleaseIf): Promise<void> {
    const kv = this.bucket();
    const key = kvKey(uid);
    if (only === undefined) return kv.delete(key);
    const entry = await kv.get(key);
    if (entry === undefined || !matches(this.parse(uid, entry.value), only)) return;
    try {
      await kv.delete(key, entry.revision);
    } catch (err) {
      // Claimed again since it was read: that claim stands.
      if (!(err instanceof KvConflictError)) throw err;
    }
  }

  owner(uid: string): Promise<Claim | undefined> {
    return this.slots.run(() =>
      this.withBucket(async () => {
        const entry = await this.bucket().get(kvKey(uid));
        return entry === undefined ? undefined : this.parse(uid, entry.value);
      }),
    );
  }

  /**
   * Runs `op`; when the store fails, opens the bucket again (which creates it if a NATS server came back without
   * its JetStream store) and retries once. At most one re-open per REOPEN_INTERVAL_MS, so an outage is not hammered.
   */
  private async withBucket<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (!(err instanceof KvUnavailableError) || Date.now() - this.reopenedAt < REOPEN_INTERVAL_MS) throw err;
      this.reopenedAt = Date.now();
      try {
        this.kv = await this.open();
      } catch {
        throw err;
      }
      this.log.warn({ err }, 'ownership store failed; bucket opened again');
      return op();
    }
  }

  private bucket(): KvBucket {
    if (this.kv === undefined) throw new Error('KvOwnership used before start()');
    return this.kv;
  }

  /**
   * A value this code did not write (or a corrupt one) reads as a proven claim of an unknown gateway: only a
   * token-proven node can take the uid, or an operator's DELETE.
   */
  private parse(uid: string, value: Uint8Array): Claim {
    try {
      const v = JSON.parse(Buffer.from(value).toString('utf8')) as { gateway?: unknown; proof?: unknown };
      if (typeof v.gateway === 'string')
        return v.proof === 'token' ? { gateway: v.gateway, proof: 'token' } : { gateway: v.gateway };
    } catch {
      // fall through
    }
    this.log.warn({ uid }, 'unreadable ownership record: read as a proven claim of an unknown gateway');
    return { gateway: '?', proof: 'token' };
  }
}

/** At most `max` store operations at once; the rest wait in arrival order (each one's timeout starts when it runs). */
class Slots {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.max) this.active++;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await task();
    } finally {
      // The slot passes straight to the next waiter, so `active` only drops when nobody waits.
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.active--;
    }
  }
}

function encodeClaim(claim: Claim): Uint8Array {
  return Buffer.from(JSON.stringify(claim));
}

export interface OwnershipSetup {
  bus: Bus;
  statusOf: StatusOf;
  /** The node as this broker's table holds it (for --local-ownership, which has no shared store). */
  recordOf?: (uid: string) => NodeRecord | undefined;
  log: Logger;
  /** On NATS: decide in this broker alone (ownershipOptions.localOwnership). */
  local?: boolean;
  timeoutMs?: number;
  /** Store operations in flight at once (ownershipOptions.ownershipConcurrency). */
  concurrency?: number;
}

/** The registry for a bus: in-process, a map; on NATS, the JetStream bucket unless told to stay local. */
export function createOwnership(setup: OwnershipSetup): OwnershipRegistry {
  if (setup.bus.kind === 'memory') return new LocalOwnership(setup.statusOf);
  if (setup.local) {
    const recordOf = setup.recordOf ?? (() => undefined);
    return new LocalOwnership(setup.statusOf, { log: setup.log, recordOf });
  }
  const timeoutMs = setup.timeoutMs ?? ownershipOptions.ownershipTimeoutMs.default;
  return new KvOwnership(
    () => setup.bus.keyValue(OWNERSHIP_BUCKET, { timeoutMs }),
    setup.statusOf,
    setup.log,
    setup.concurrency,
  );
}

// ---------------------------------------------------------------------------------------------
// What the broker does around the registry. Narrow dependencies: the few things each step touches.

/** A gateway session as ownership sees it: it may be told that it lost a node. */
export interface NodeHolder {
  ownershipLost(uid: string, why: OwnerLost): void;
}

export interface OwnerLostDeps {
  gateways: ReadonlyMap<string, NodeHolder>;
  ownership: OwnershipRegistry;
  log: Logger;
}

/**
 * A node left its gateway (NodeTable.onOwnerLost): that gateway's session on this broker forgets the uid. An
 * evicted node's claim is released too, unless the node had proven its uid: unproven claims (anyone can make one
 * with a CoAP beacon) must not outlive the table's --offline-retention-ms bound; proven ones stay bounded by the
 * node tokens the operator minted, and keep protecting the uid.
 */
export function ownerLost(deps: OwnerLostDeps, node: NodeRecord, why: OwnerLost): void {
  deps.gateways.get(node.gateway)?.ownershipLost(node.uid, why);
  // Each broker's own map (--local-ownership) learns of a removal made on a peer broker only from this event.
  if (why === 'removed' && deps.ownership.kind === 'local') {
    deps.ownership
      .release(node.uid, { owner: node.gateway })
      .catch((err) => deps.log.warn({ err, uid: node.uid }, 'could not release the claim of a removed node'));
  }
  if (why === 'evicted' && node.proof === undefined) {
    deps.ownership
      .release(node.uid, { owner: node.gateway, unproven: true })
      .catch((err) => deps.log.warn({ err, uid: node.uid }, 'could not release the claim of an evicted node'));
  }
}

export interface RemoveDeps {
  table: { get(uid: string): NodeRecord | undefined };
  ownership: OwnershipRegistry;
  events: { publishEvent(event: NodeEvent): void };
  log: Logger;
}

/**
 * DELETE /api/v1/nodes/:uid: every broker forgets the node (an `out` with reason `removed` on the bus) and the
 * uid's claim is released. False when neither the table nor the registry knows the uid. The event goes out
 * before the release: a gateway that claims the uid once it is free publishes its `new` after the removal, so
 * no broker applies the removal to the new owner's node.
 */
export async function removeNode(deps: RemoveDeps, uid: string, by: string): Promise<boolean> {
  const node = deps.table.get(uid);
  const claim = await deps.ownership.owner(uid);
  if (node === undefined && claim === undefined) return false;
  deps.events.publishEvent({ type: 'out', uid, reason: 'removed', lastSeen: Date.now() });
  await deps.ownership.release(uid);
  deps.log.info({ uid, by, gateway: claim?.gateway ?? node?.gateway }, 'node removed by an operator; uid released');
  return true;
}
