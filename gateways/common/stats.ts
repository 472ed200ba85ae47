// The counters a gateway reports about itself, kept in one place on the core: the core's series of the metrics
// registry (the same names in every gateway) and what core.stats() reports: messages to and from nodes, errors
// by kind, the broker link, node counts by status. Status reports read stats(); /metrics renders the registry.
import type { Counter, Metrics } from '../../services/common/metrics.ts';
import type { BrokerLink } from './broker-link.ts';
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

export class CoreCounters {
  readonly in: Counter;
  readonly out: Counter;
  readonly outs: (reason: string) => Counter;
  readonly writes: (result: string) => Counter;
  readonly refusals: (reason: string) => Counter;
  readonly refusedByBroker: (code: string) => Counter;
  private readonly errors = new Map<string, number>();

  constructor(m: Metrics, nodes: () => number, link: BrokerLink) {
    this.in = m.counter('node_messages_in_total', 'messages received from nodes (any kind)');
    this.out = m.counter('node_messages_out_total', 'messages sent to nodes (writes, discovery, probes)');
    this.outs = m.counterFamily('nodes_out_total', 'nodes gone out, by reason', 'reason');
    this.writes = m.counterFamily('writes_total', 'writes to nodes, by result', 'result');
    this.refusals = m.counterFamily(
      'node_refusals_total',
      'nodes and values refused before reaching the broker (identifier rule, depth, caps), by reason',
      'reason',
    );
    this.refusedByBroker = m.counterFamily(
      'refused_by_broker_total',
      'nodes the broker refused (dropped here), by error code',
      'code',
    );
    m.gauge('nodes', 'nodes this gateway holds', nodes);
    m.gauge('broker_link_connected', '1 while the link to the Mycelium broker is open', () => (link.connected ? 1 : 0));
    m.gauge('broker_link_reconnects', 'times the broker link opened again after the first time', () =>
      Math.max(0, link.opened - 1),
    );
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
