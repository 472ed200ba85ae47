// The broker's picture of every gateway's inventory and status (issue 11, item 7). A gateway session hands over
// each checked report; the broker holding the gateway publishes it on `myc.gateway.<id>.report` (at most one
// publish per gateway per --gateway-report-min-interval-ms: faster reports are coalesced into the next one and
// counted), and every broker, this one included, applies what comes off the bus: it keeps the last report and
// a short history per gateway and writes a `gateway` frame to its web clients. Each publish carries the
// inventory and the last status together, so a broker that starts later knows every gateway within one status
// interval. A gateway that disconnects is dropped (`gateway-gone`): a report is about a live link, and a
// gateway id rotated by a compromised gateway must not pile up records.
import { randomUUID } from 'node:crypto';
import type { Bus, BusMsg, BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import type { ConfigOf, OptionTable } from '../common/config.ts';
import type { Logger } from '../common/log.ts';
import { parseBrokerToClientFrame } from '../protocol/frames.ts';
import {
  cleanInventory,
  cleanStatus,
  type GwInventory,
  type GwStatus,
  type Inventory,
  type Status,
  type ToClientGateway,
  type ToClientGatewayGone,
} from '../protocol/gateway-reports.ts';
import { stringifySafe } from '../protocol/schema.ts';
import type { BrokerCounters } from './ports.ts';

export const gatewayReportOptions = {
  gatewayReportMinIntervalMs: {
    type: 'number',
    default: 1000,
    min: 0,
    description: "fewest ms between two publishes of one gateway's report; faster reports are coalesced (counted)",
  },
  gatewayReportTtlMs: {
    type: 'number',
    default: 60_000,
    min: 10,
    description: "a peer broker's gateway report not refreshed for this long is dropped (its broker died)",
  },
  gatewayHistory: {
    type: 'number',
    default: 60,
    min: 1,
    description: 'status reports kept per gateway for GET /api/v1/gateways/:id (history of counts)',
  },
  actionTimeoutMs: {
    type: 'number',
    default: 10_000,
    min: 10,
    description: 'how long a gateway action waits for its result (then 504)',
  },
} as const satisfies OptionTable;

export type GatewayReportConfig = ConfigOf<typeof gatewayReportOptions>;

/** One point of a gateway's history: totals at the time of a status report. */
export interface HistoryPoint {
  at: number;
  in: number;
  out: number;
  errors: number;
}

export interface GatewayReportView {
  id: string;
  broker: string;
  connectedAt: number;
  inventory?: Inventory;
  status?: Status;
  history: HistoryPoint[];
}

/** A gateway connection as the store sees it. */
export interface ReportingGateway {
  readonly gatewayId: string;
  readonly connectedAt: number;
}

export interface GatewayReportsDeps {
  brokerId: string;
  log: Logger;
  bus: Pick<Bus, 'publish' | 'subscribe'>;
  counters: Pick<BrokerCounters, 'rejected'>;
  /** Writes a client frame (JSON text) to every registered web client. */
  broadcast(text: string): void;
  config: Pick<GatewayReportConfig, 'gatewayReportMinIntervalMs' | 'gatewayReportTtlMs' | 'gatewayHistory'>;
}

/** What this broker holds of one of its own gateway connections. */
interface LocalReports {
  /** Names this connection on the bus, so a `gone` of an old connection never drops a newer one's report. */
  session: string;
  inventory?: Inventory;
  status?: Status;
  lastPublished: number;
  timer?: NodeJS.Timeout;
}

interface Entry extends GatewayReportView {
  session: string;
  /** When the last report came off the bus (for the TTL of a peer's reports). */
  heardAt: number;
}

export class GatewayReports {
  private readonly entries = new Map<string, Entry>();
  private readonly local = new Map<ReportingGateway, LocalReports>();
  private sub?: BusSubscription;
  private sweepTimer?: NodeJS.Timeout;

  constructor(private readonly deps: GatewayReportsDeps) {}

  start(): void {
    this.sub = this.deps.bus.subscribe(subjects.allGatewayReports, (msg) => this.onBus(msg));
    const ttl = this.deps.config.gatewayReportTtlMs;
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(10, Math.min(ttl / 2, 10_000)));
    this.sweepTimer.unref();
  }

  stop(): void {
    this.sub?.unsubscribe();
    clearInterval(this.sweepTimer);
    for (const l of this.local.values()) clearTimeout(l.timer);
    this.local.clear();
  }

  inventory(gw: ReportingGateway, msg: GwInventory): void {
    this.localOf(gw).inventory = cleanInventory(msg);
    this.schedule(gw);
  }

  status(gw: ReportingGateway, msg: GwStatus): void {
    this.localOf(gw).status = cleanStatus(msg);
    this.schedule(gw);
  }

  /** The connection closed: every broker drops the report, unless a newer connection already replaced it. */
  gone(gw: ReportingGateway): void {
    const l = this.local.get(gw);
    if (l === undefined) return;
    clearTimeout(l.timer);
    this.local.delete(gw);
    this.publish(gw.gatewayId, {
      type: 'gateway-gone',
      id: gw.gatewayId,
      broker: this.deps.brokerId,
      session: l.session,
    });
  }

  get(id: string): GatewayReportView | undefined {
    return this.entries.get(id);
  }

  /** Every known report as client frames (a client's snapshot). */
  frames(): ToClientGateway[] {
    return [...this.entries.values()].map(clientFrame);
  }

  private localOf(gw: ReportingGateway): LocalReports {
    let l = this.local.get(gw);
    if (l === undefined) {
      l = { session: randomUUID(), lastPublished: 0 };
      this.local.set(gw, l);
    }
    return l;
  }

  /** Publishes now, or once the minimum interval is over (what arrives meanwhile replaces what waits). */
  private schedule(gw: ReportingGateway): void {
    const l = this.localOf(gw);
    if (l.timer !== undefined) {
      this.deps.counters.rejected('gateway-report-coalesced').inc();
      return;
    }
    const wait = l.lastPublished + this.deps.config.gatewayReportMinIntervalMs - Date.now();
    if (wait <= 0) return this.publishLocal(gw, l);
    l.timer = setTimeout(() => {
      l.timer = undefined;
      if (this.local.get(gw) === l) this.publishLocal(gw, l);
    }, wait);
    l.timer.unref();
  }

  private publishLocal(gw: ReportingGateway, l: LocalReports): void {
    l.lastPublished = Date.now();
    const frame: ToClientGateway & { session: string } = {
      type: 'gateway',
      id: gw.gatewayId,
      broker: this.deps.brokerId,
      connectedAt: gw.connectedAt,
      session: l.session,
    };
    if (l.inventory !== undefined) frame.inventory = l.inventory;
    if (l.status !== undefined) frame.status = l.status;
    this.publish(gw.gatewayId, frame);
  }

  private publish(gatewayId: string, envelope: object): void {
    const text = stringifySafe(envelope);
    if (text === undefined) return this.deps.log.warn({ gateway: gatewayId }, 'gateway report cannot be serialized');
    this.deps.bus.publish(subjects.gatewayReport(gatewayId), Buffer.from(text));
  }

  /** A report or a departure from any broker (peer input: parsed with the depth cap and checked again). */
  private onBus(msg: BusMsg): void {
    const parsed = parseBrokerToClientFrame(
      Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.length).toString(),
    );
    const session = parsed.ok ? (parsed.value as { session?: unknown }).session : undefined;
    if (!parsed.ok || typeof session !== 'string' || session.length > 64) {
      this.deps.counters.rejected('bad-bus-gateway-report').inc();
      this.deps.log.warn(
        { subject: msg.subject, reason: parsed.ok ? 'no session' : parsed.reason },
        'bad gateway report on bus',
      );
      return;
    }
    const frame = parsed.value;
    if (frame.type === 'gateway') return this.apply(frame, session);
    if (frame.type === 'gateway-gone') {
      const entry = this.entries.get(frame.id);
      if (entry === undefined || entry.session !== session) return;
      this.drop(entry);
      return;
    }
    this.deps.counters.rejected('bad-bus-gateway-report').inc();
  }

  private apply(frame: ToClientGateway, session: string): void {
    let entry = this.entries.get(frame.id);
    // A late report of an older connection (the gateway moved to another broker, whose report came first) must
    // not replace the newer one; its `gateway-gone` is then ignored too, since the sessions differ.
    if (entry !== undefined && entry.session !== session && entry.connectedAt > frame.connectedAt) {
      this.deps.counters.rejected('stale-gateway-report').inc();
      return;
    }
    if (entry === undefined || entry.session !== session) {
      // A new connection of the gateway (here or on a peer): a fresh record and history.
      entry = { id: frame.id, broker: frame.broker, connectedAt: frame.connectedAt, session, history: [], heardAt: 0 };
      this.entries.set(frame.id, entry);
    }
    entry.heardAt = Date.now();
    if (frame.inventory !== undefined) entry.inventory = cleanInventory(frame.inventory);
    if (frame.status !== undefined) {
      const status = cleanStatus(frame.status);
      const last = entry.history[entry.history.length - 1];
      if (last === undefined || last.at !== status.at) {
        entry.history.push({
          at: status.at,
          in: status.messages.in,
          out: status.messages.out,
          errors: sum(status.errors),
        });
        if (entry.history.length > this.deps.config.gatewayHistory) entry.history.shift();
      }
      entry.status = status;
    }
    const text = stringifySafe(clientFrame(entry));
    if (text !== undefined) this.deps.broadcast(text);
  }

  private drop(entry: Entry): void {
    this.entries.delete(entry.id);
    const gone: ToClientGatewayGone = { type: 'gateway-gone', id: entry.id };
    this.deps.broadcast(JSON.stringify(gone));
  }

  /** Reports of a peer broker that stopped refreshing them (it died, or lost the bus) are dropped. */
  private sweep(): void {
    const deadline = Date.now() - this.deps.config.gatewayReportTtlMs;
    for (const entry of this.entries.values()) {
      if (entry.broker !== this.deps.brokerId && entry.heardAt < deadline) this.drop(entry);
    }
  }
}

function clientFrame(entry: GatewayReportView): ToClientGateway {
  const frame: ToClientGateway = {
    type: 'gateway',
    id: entry.id,
    broker: entry.broker,
    connectedAt: entry.connectedAt,
  };
  if (entry.inventory !== undefined) frame.inventory = entry.inventory;
  if (entry.status !== undefined) frame.status = entry.status;
  return frame;
}

function sum(counts: Record<string, number>): number {
  let n = 0;
  for (const key in counts) n += counts[key];
  return n;
}
