// What a gateway tells the broker about itself (issue 11, item 7): its inventory on every (re)connection, and a
// status report on connect and every --status-interval seconds. Built from a narrow source (the node counts by
// status, the gateway's totals), so whichever core owns the node table can feed it; the reporter owns only its
// timer and the event-loop delay monitor. Totals are since the gateway started, so a broker that missed reports
// (a reconnect, a late peer) still shows the right numbers; rates are the broker's and the page's business.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { Logger } from '../../services/common/log.ts';
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

/** The error kind counted when a gateway has already seen MAX_REPORT_KEYS - 1 other kinds. */
export const OTHER_ERRORS = 'other';

/** True when `key` may be a key of a report's count map (the broker refuses a report with any other). */
export function isReportKey(key: string): boolean {
  return key.length <= MAX_REPORT_KEY_LENGTH && isIdentifier(key) === undefined;
}

/**
 * The totals a gateway reports. Counted where they happen (the core, the protocol adapter); error kinds are
 * bounded: beyond MAX_REPORT_KEYS - 1 kinds, or for a kind that is not a valid key, the count goes to `other`.
 */
export class GatewayStats {
  /** Messages from nodes the gateway accepted (announcements and values). */
  messagesIn = 0;
  /** Messages to nodes (writes). */
  messagesOut = 0;
  /** Broker link connections after the first (token renewals are not reconnects). */
  reconnects = 0;
  private readonly errors = new Map<string, number>();

  error(kind: string, n = 1): void {
    const known = this.errors.get(kind);
    if (known !== undefined) {
      this.errors.set(kind, known + n);
      return;
    }
    const key = isReportKey(kind) && this.errors.size < MAX_REPORT_KEYS - 1 ? kind : OTHER_ERRORS;
    this.errors.set(key, (this.errors.get(key) ?? 0) + n);
  }

  errorCounts(): Record<string, number> {
    return Object.fromEntries(this.errors);
  }
}

/** What the reporter reads when it builds a report. */
export interface StatusSource {
  stats: GatewayStats;
  /** Node counts by status (`online`, and whatever else the protocol tells apart). */
  nodeCounts(): Record<string, number>;
}

export interface InventorySource {
  protocol: string;
  version: string;
  startedAt: number;
  /** The actions this gateway answers (empty when it has no handler). */
  actions(): string[];
  /** Where the gateway listens for nodes, e.g. `udp://127.0.0.1:5683`; read at each connection. */
  listen(): string[];
}

export interface StatusReporterOptions {
  source: StatusSource;
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
      protocol: clip(inv.protocol),
      version: clip(inv.version),
      startedAt: inv.startedAt,
      actions: inv.actions().slice(0, MAX_REPORT_LIST).map(clip),
      listen: inv.listen().slice(0, MAX_REPORT_LIST).map(clip),
    };
  }

  status(now = Date.now()): GwStatus {
    const { stats } = this.opts.source;
    // The longest stall since the previous report: what a user of the dashboard feels as lag.
    const max = this.loopDelay.max / 1e6;
    this.loopDelay.reset();
    return {
      type: 'status',
      at: now,
      uptimeS: Math.max(0, Math.round((now - this.opts.inventory.startedAt) / 1000)),
      nodes: boundedCounts(this.opts.source.nodeCounts()),
      messages: { in: stats.messagesIn, out: stats.messagesOut },
      errors: stats.errorCounts(),
      reconnects: stats.reconnects,
      eventLoopLagMs: Number.isFinite(max) && max > 0 ? Math.round(max * 10) / 10 : 0,
    };
  }

  private sendFrame(msg: GwInventory | GwStatus): void {
    const frame = encode(msg);
    if (frame === undefined) return this.opts.log.warn({ type: msg.type }, 'report cannot be serialized; skipped');
    this.opts.send(frame);
  }
}

/** A count map the broker accepts: valid keys only, at most MAX_REPORT_KEYS, finite counts >= 0. */
function boundedCounts(counts: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  let n = 0;
  for (const key in counts) {
    const v = counts[key];
    if (!isReportKey(key) || !Number.isFinite(v) || v < 0) continue;
    if (++n > MAX_REPORT_KEYS) break;
    out[key] = v;
  }
  return out;
}

function clip(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the broker refuses control characters in reports
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?').slice(0, MAX_REPORT_STRING);
}

let version: string | undefined;

/** Mycelium's version from its package.json (found from this file, in the sources or in dist/). */
export function gatewayVersion(): string {
  if (version !== undefined) return version;
  version = '0.0.0';
  let dir = import.meta.dirname;
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: unknown };
      if (typeof pkg.version === 'string') version = pkg.version;
      break;
    } catch {
      dir = dirname(dir);
    }
  }
  return version;
}
