// The broker's counters: created once, then handed (as BrokerCounters, ports.ts) to the parts that bump them.
import { LATENCY_BUCKETS_S, type Metrics } from '../common/metrics.ts';
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
    messageSeconds: m.histogram(
      'message_latency_seconds',
      'from a gateway frame arriving to its event written to every client socket, on the broker that received it',
      LATENCY_BUCKETS_S,
    ),
    writeSeconds: m.histogram(
      'write_duration_seconds',
      'from a write request (REST or /ws) to its result',
      [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    ),
  };
}
