// The broker's counters: created once, then handed (as BrokerCounters, ports.ts) to the parts that bump them.
import type { Metrics } from '../common/metrics.ts';
import type { BrokerCounters } from './ports.ts';

export function brokerCounters(m: Metrics): BrokerCounters {
  return {
    gatewayFramesIn: m.counter('messages_in_total', 'frames received', { from: 'gateway' }),
    clientFramesIn: m.counter('messages_in_total', 'frames received', { from: 'client' }),
    delivered: m.counter('messages_out_total', 'frames sent to web clients', { to: 'client' }),
    toGateways: m.counter('messages_out_total', 'frames sent to gateways', { to: 'gateway' }),
    events: m.counter('node_events_total', 'node events applied from the bus'),
    rejected: m.counterFamily('rejections_total', 'refused frames, connections and writes', 'reason'),
    writes: m.counterFamily('writes_total', 'writes by result', 'result'),
    evicted: m.counter('nodes_evicted_total', 'offline nodes forgotten after --offline-retention-ms'),
    sessionsEnded: m.counterFamily('sessions_ended_total', 'sessions closed because their token ended', 'reason'),
  };
}
