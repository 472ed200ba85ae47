// What a gateway tells the broker about itself (issue 11, item 7): its inventory on every (re)connection, and a
// status report on connect and every --status-interval seconds. Built from the core's stats() (the node counts by
// status, the totals of its counters), so the reporter owns only its timer and the event-loop delay monitor.
// Totals are since the gateway started, so a broker that missed reports (a reconnect, a late peer) still shows the
// right numbers; rates are the broker's and the page's business.
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { Logger } from '../../services/common/log.ts';
import { projectVersion } from '../../services/common/project-root.ts';
import { encode } from '../../services/protocol/frames.ts';
import {
  type GwInventory,
  type GwStatus,
  MAX_REPORT_KEY_LENGTH,
  MAX_REPORT_KEYS,
  MAX_REPORT_LIST,
  MAX_REPORT_STRING,
} from '../../services/protocol/gateway-reports.ts';
import { isIdentifier } from '../../services/protocol/schema.ts';
import type { CoreStats } from './stats.ts';

/** The error kind that counts every kind beyond the first MAX_REPORT_KEYS - 1, and kinds that are not keys. */
export const OTHER_ERRORS = 'other';

/** True when `key` may be a key of a report's count map (the broker refuses a report with any other). */
export function isReportKey(key: string): boolean {
  return key.length <= MAX_REPORT_KEY_LENGTH && isIdentifier(key) === undefined;
}

/**
 * The core's error counts as a report may carry them: at most MAX_REPORT_KEYS keys; past MAX_REPORT_KEYS - 1
 * kinds, or for a kind that is not a valid key, the count goes to `other`.
 */
export function boundedErrors(errors: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  let kinds = 0;
  let other = 0;
  for (const kind in errors) {
    const n = errors[kind];
    if (!Number.isFinite(n) || n < 0) continue;
    if (kind !== OTHER_ERRORS && isReportKey(kind) && kinds < MAX_REPORT_KEYS - 1) {
      out[kind] = n;
      kinds++;
    } else other += n;
  }
  if (other > 0) out[OTHER_ERRORS] = other;
  return out;
}

export interface InventorySource {
  /** The adapter's protocol name (known once it is plugged in). */
  protocol: () => string;
  version: string;
  startedAt: number;
  /** The actions this gateway answers (empty when it has no handler). */
  actions(): string[];
  /** Where the gateway listens for nodes, e.g. `udp://127.0.0.1:5683`; read at each connection. */
  listen(): string[];
}

export interface StatusReporterOptions {
  /** The core's counters and node counts (GatewayCore.stats()). */
  stats: () => CoreStats;
  inventory: InventorySource;
  /** --status-interval, in milliseconds. */
  intervalMs: number;
  /** Sends one frame on the broker link; false when the link is down (the report is simply skipped). */
  send: (frame: string) => boolean;
  log: Logger;
}

export const STATUS_DEFAULTS = { intervalMs: 10_000 } as const;

export class StatusReporter {
  private timer?: NodeJS.Timeout;
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });

  constructor(private readonly opts: StatusReporterOptions) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.loopDelay.enable();
    this.timer = setInterval(() => this.sendStatus(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.loopDelay.disable();
  }

  /** Before the node replay of every (re)connection. */
  sendInventory(): void {
    this.sendFrame(this.inventory());
  }

  /** After the replay, and on every tick. */
  sendStatus(): void {
    this.sendFrame(this.status());
  }

  inventory(): GwInventory {
    const inv = this.opts.inventory;
    return {
      type: 'inventory',
      protocol: clip(inv.protocol()),
      version: clip(inv.version),
      startedAt: inv.startedAt,
      actions: inv.actions().slice(0, MAX_REPORT_LIST).map(clip),
      listen: inv.listen().slice(0, MAX_REPORT_LIST).map(clip),
    };
  }

  status(now = Date.now()): GwStatus {
    const stats = this.opts.stats();
    // The longest stall since the previous report: what a user of the dashboard feels as lag.
    const max = this.loopDelay.max / 1e6;
    this.loopDelay.reset();
    return {
      type: 'status',
      at: now,
      uptimeS: Math.max(0, Math.round((now - this.opts.inventory.startedAt) / 1000)),
      nodes: boundedCounts(stats.nodes),
      messages: { in: stats.messagesIn, out: stats.messagesOut },
      errors: boundedErrors(stats.errors),
      reconnects: stats.brokerLinkReconnects,
      eventLoopLagMs: Number.isFinite(max) && max > 0 ? Math.round(max * 10) / 10 : 0,
    };
  }

  private sendFrame(msg: GwInventory | GwStatus): void {
    const frame = encode(msg);
    if (frame === undefined) return this.opts.log.warn({ type: msg.type }, 'report cannot be serialized; skipped');
    this.opts.send(frame);
  }
}

/**
 * Node counts as the broker accepts them: valid keys only, at most MAX_REPORT_KEYS, finite counts >= 0. A status
 * with no node in it is left out, `online` excepted: the core knows every status of every protocol, and a
 * WebSocket node (online from its first frame) would otherwise show `0 unverified, 0 discovering` forever.
 */
function boundedCounts(counts: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  let n = 0;
  for (const key in counts) {
    const v = counts[key];
    if (!isReportKey(key) || !Number.isFinite(v) || v < 0 || (v === 0 && key !== 'online')) continue;
    if (++n > MAX_REPORT_KEYS) break;
    out[key] = v;
  }
  return out;
}

function clip(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the broker refuses control characters in reports
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?').slice(0, MAX_REPORT_STRING);
}

/** Mycelium's version, reported in the gateway's inventory. */
export function gatewayVersion(): string {
  return projectVersion();
}
