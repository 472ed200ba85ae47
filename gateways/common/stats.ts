// The counters a gateway reports about itself, kept in one place on the core (core.stats()): messages to and
// from nodes, errors by kind, the broker link, node counts by status. Status reports read this; /metrics
// exposes the same counters through the registry.
import type { Counter, Metrics } from '../../services/common/metrics.ts';
import type { NodeStatus } from './node-table.ts';

export interface CoreStats {
  protocol: string;
  messagesIn: number;
  messagesOut: number;
  /** Refusals and failures by kind (the reason labels of the adapter's and the core's counters). */
  errors: Record<string, number>;
  nodes: Record<NodeStatus, number>;
  brokerLinkConnected: boolean;
  brokerLinkReconnects: number;
  brokerLinkRenewals: number;
}

/** Bound on distinct error kinds kept (kinds come from fixed label sets, but a bug must not grow this forever). */
const MAX_ERROR_KINDS = 256;

export class StatsCounters {
  readonly in: Counter;
  readonly out: Counter;
  private readonly errors = new Map<string, number>();

  constructor(metrics: Metrics) {
    this.in = metrics.counter('node_messages_in_total', 'messages received from nodes (any kind)');
    this.out = metrics.counter('node_messages_out_total', 'messages sent to nodes (writes, discovery, probes)');
  }

  error(kind: string): void {
    const n = this.errors.get(kind);
    if (n !== undefined) this.errors.set(kind, n + 1);
    else if (this.errors.size < MAX_ERROR_KINDS) this.errors.set(kind, 1);
  }

  snapshot(rest: Omit<CoreStats, 'messagesIn' | 'messagesOut' | 'errors'>): CoreStats {
    return {
      ...rest,
      messagesIn: this.in.value,
      messagesOut: this.out.value,
      errors: Object.fromEntries(this.errors),
    };
  }
}
