// What the CoAP adapter's parts (inbound requests, discovery, observe) share: the config, the core, the
// transport, the counters, and the few helpers each needs. Passed as one narrow object, not the gateway.
import type { Counter, Metrics } from '../../services/common/metrics.ts';
import type { Logger } from '../../services/common/log.ts';
import type { GatewayCore } from '../common/gateway-core.ts';
import { decodeUtf8 } from './codec.ts';
import type { CoapNode, CoapState } from './endpoint-index.ts';
import type { CoapGatewayConfig } from './options.ts';
import type { Target, CoapTransport } from './transport.ts';

export interface CoapCounters {
  beacons: Counter;
  values: Counter;
  nodesNew: Counter;
  resets: Counter;
  rebinds: Counter;
  malformed: Counter;
  unknownSender: Counter;
  discoveryOk: Counter;
  discoveryTimeout: Counter;
  discoveryError: Counter;
  discoveryRateLimited: Counter;
  linkFormatErrors: Counter;
  notifications: Counter;
  observeRegistrations: Counter;
  observeRenewals: Counter;
  polls: Counter;
  bad: (reason: string) => Counter;
  probes: (result: string) => Counter;
}

export function coapCounters(r: Metrics): CoapCounters {
  return {
    beacons: r.counter('beacons_total', 'POST /alive beacons accepted'),
    values: r.counter('values_total', 'POST /server value posts accepted'),
    nodesNew: r.counter('nodes_new_total', 'nodes announced to the broker'),
    resets: r.counter('resets_total', 'reset: beacons from known nodes'),
    rebinds: r.counter('rebinds_total', 'known nodes heard from a new address or port'),
    malformed: r.counter('malformed_total', 'datagrams that are not CoAP messages (dropped, RST if CON)'),
    unknownSender: r.counter('unknown_sender_total', 'POST /server from no known node (4.04)'),
    discoveryOk: r.counter('discovery_total', 'discoveries', { result: 'ok' }),
    discoveryTimeout: r.counter('discovery_total', 'discoveries', { result: 'timeout' }),
    discoveryError: r.counter('discovery_total', 'discoveries', { result: 'error' }),
    discoveryRateLimited: r.counter('discovery_total', 'discoveries', { result: 'rate-limited' }),
    linkFormatErrors: r.counter('link_format_errors_total', 'discovery answers with unparsable links'),
    notifications: r.counter('notifications_total', 'RFC 7641 notifications received'),
    observeRegistrations: r.counter('observe_registrations_total', 'observations registered'),
    observeRenewals: r.counter('observe_renewals_total', 'observations renewed after silence'),
    polls: r.counter('polls_total', 'plain GETs of resources whose observation the node refused'),
    bad: r.counterFamily('bad_requests_total', 'requests refused with a 4.xx code', 'reason'),
    probes: r.counterFamily('probes_total', 'reachability probes of unverified nodes by result', 'result'),
  };
}

export interface CoapContext {
  readonly config: CoapGatewayConfig;
  readonly log: Logger;
  readonly core: GatewayCore<CoapState>;
  readonly transport: CoapTransport;
  readonly counters: CoapCounters;
  /** The node is still the one in the table, in the same generation, and the gateway runs. */
  alive(node: CoapNode, generation: number): boolean;
  /** Where requests to the node go (its beacon port, the fallback port or --node-port). */
  target(node: CoapNode): Target;
  /** A warning the first time a refusal reason happens, then debug (a flood must not flood the log). */
  warnOnce(reason: string, fields: Record<string, unknown>, msg: string): void;
}

/** Reports a value read from a node and returns it; undefined when it was not a readable 2.05 answer. */
export function reportValue(
  ctx: CoapContext,
  node: CoapNode,
  name: string,
  code: string,
  payload: Buffer,
): string | undefined {
  if (code !== '2.05') {
    ctx.log.debug({ uid: node.uid, resource: name, code }, 'resource not readable');
    return undefined;
  }
  const value = decodeUtf8(payload);
  if (value === undefined) {
    ctx.counters.bad('node-bad-utf8').inc();
    ctx.core.noteError('node-bad-utf8');
    ctx.log.warn({ uid: node.uid, resource: name }, 'resource value is not UTF-8; dropped');
    return undefined;
  }
  ctx.core.update(node.uid, name, value);
  return value;
}
