// Peer brokers on a shared bus: who is alive and which gateways each one holds.
// Every broker publishes a heartbeat listing its gateways; a broker whose heartbeats stop is dead, and the
// gateways it held get a grace period to reappear on another broker before their nodes go `out`.
// One surviving broker (the lowest id) does that, so clients get each `out` once.
import type { Bus, BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import type { Logger } from '../common/log.ts';
import type { GatewayRecord } from '../protocol/messages.ts';
import type { GatewayView, GracePeriods } from './ports.ts';

export interface PeerDirectoryDeps {
  brokerId: string;
  bus: Pick<Bus, 'kind' | 'subscribe' | 'publish'>;
  log: Logger;
  /** The gateways connected to this broker: listed in each heartbeat. */
  gateways: ReadonlyMap<string, GatewayView>;
  /** Started for the gateways of a peer that died, by the one surviving broker with the lowest id. */
  grace: GracePeriods;
  /** --peer-heartbeat-ms */
  intervalMs: number;
}

interface Peer {
  lastSeen: number;
  gateways: GatewayRecord[];
}

interface Heartbeat {
  broker: string;
  gateways: GatewayRecord[];
}

/** A peer is dead after this many missed heartbeats. */
export const MISSED_HEARTBEATS = 3;

export class PeerDirectory {
  private peers = new Map<string, Peer>();
  private timer?: NodeJS.Timeout;
  private sub?: BusSubscription;

  constructor(private readonly deps: PeerDirectoryDeps) {}

  start(): void {
    if (this.deps.bus.kind === 'memory') return; // alone on an in-process bus
    this.sub = this.deps.bus.subscribe(subjects.allBrokersAlive, (msg) => {
      let hb: Heartbeat;
      try {
        hb = JSON.parse(Buffer.from(msg.data).toString()) as Heartbeat;
      } catch {
        return;
      }
      if (typeof hb.broker !== 'string' || hb.broker === this.deps.brokerId || !Array.isArray(hb.gateways)) return;
      this.peers.set(hb.broker, { lastSeen: Date.now(), gateways: hb.gateways });
    });
    this.timer = setInterval(() => this.tick(), this.deps.intervalMs);
    this.timer.unref();
    this.publish();
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }

  /** The live peer broker that holds `gatewayId`, if any. */
  locate(gatewayId: string): string | undefined {
    for (const [id, peer] of this.peers) {
      if (peer.gateways.some((g) => g.id === gatewayId)) return id;
    }
    return undefined;
  }

  /** What a peer said about itself in its state-sync reply (before its first heartbeat reaches us). */
  seed(brokerId: string, gateways: GatewayRecord[]): void {
    if (brokerId !== this.deps.brokerId) this.peers.set(brokerId, { lastSeen: Date.now(), gateways });
  }

  /** A claim seen on the bus: the gateway now lives on `brokerId` (ahead of that broker's next heartbeat). */
  claimed(brokerId: string, gatewayId: string): void {
    for (const peer of this.peers.values()) peer.gateways = peer.gateways.filter((g) => g.id !== gatewayId);
    const peer = this.peers.get(brokerId);
    if (peer) peer.gateways.push({ id: gatewayId, broker: brokerId, connectedAt: Date.now(), nodes: 0 });
  }

  /** Gateways held by live peers. */
  remoteGateways(): GatewayRecord[] {
    return [...this.peers.values()].flatMap((p) => p.gateways);
  }

  private publish(): void {
    const hb: Heartbeat = {
      broker: this.deps.brokerId,
      gateways: [...this.deps.gateways.values()].map((g) => g.record()),
    };
    this.deps.bus.publish(subjects.brokerAlive(this.deps.brokerId), Buffer.from(JSON.stringify(hb)));
  }

  private tick(): void {
    this.publish();
    const deadline = Date.now() - this.deps.intervalMs * MISSED_HEARTBEATS;
    for (const [id, peer] of this.peers) {
      if (peer.lastSeen >= deadline) continue;
      this.peers.delete(id);
      this.deps.log.warn({ peer: id, gateways: peer.gateways.length }, 'peer broker stopped sending heartbeats');
      if (!this.isLowestLiveId()) continue;
      for (const gw of peer.gateways) {
        if (!this.deps.gateways.has(gw.id) && this.locate(gw.id) === undefined) this.deps.grace.startGrace(gw.id);
      }
    }
  }

  private isLowestLiveId(): boolean {
    for (const id of this.peers.keys()) if (id < this.deps.brokerId) return false;
    return true;
  }
}
