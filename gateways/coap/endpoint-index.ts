// What the CoAP adapter keeps per node (in the core's node table, as the node's state), and an index of the
// nodes by the endpoint they were last heard from, so a value post finds its node without a second node map.
// pyaiot keyed nodes by IP address and checked the uid against that map, so every beacon looked like a new
// node (pyaiot-protocol §4.2). Here the uid is the identity; the address and port are only where the node
// was last heard from. The port may change (NAT rebinding, a client that beacons from a fresh socket each time);
// the address is bound on first use and changes only with --allow-rebinding (docs/gateways/coap.md, Identity).
import type { GatewayNode } from '../common/node-table.ts';

export interface CoapState {
  /** Address as the socket reports it (IPv4 senders on a dual-stack socket appear as ::ffff:a.b.c.d). */
  address: string;
  /** Source port of the last beacon. */
  port: number;
  /** Bumped on reset and out: async work (discovery, observe) started for an older generation is dropped. */
  generation: number;
  /** In the discovery queue or being discovered. */
  discovering: boolean;
  /** Date.now() when the last discovery got no answer (0 = none failed): a later beacon retries it. */
  discoveryFailedAt: number;
  /** Discovery is due but waits for a beacon (probe credit, rate limit, the next probe port). */
  wantDiscovery: boolean;
  /**
   * Where the node answered the reachability probe: at its beacon's source port, at --fallback-node-port, or at
   * --node-port. Undefined while unverified: then nothing but answers and probes is sent to it (anti-amplification).
   */
  serve?: 'beacon' | 'fallback' | 'configured';
  /** Bytes received from the node beyond the bytes of our answers to them; a probe spends PROBE_BYTES of it. */
  credit: number;
  /** A beacon arrived since the last probe: at most one probe per beacon. */
  probeReady: boolean;
  /** Which probe port is next while unverified: 0 = the beacon's source port, 1 = the fallback port. */
  probeStep: number;
}

export type CoapNode = GatewayNode<CoapState>;

export class EndpointIndex {
  /** address -> port -> node: value posts are matched without building a string key per datagram. */
  private readonly byEndpoint = new Map<string, Map<number, CoapNode>>();

  add(node: CoapNode): void {
    let ports = this.byEndpoint.get(node.state.address);
    if (ports === undefined) {
      ports = new Map();
      this.byEndpoint.set(node.state.address, ports);
    }
    // A newer node at the same endpoint wins (a re-flashed device with a new uid); the older one keeps its
    // uid entry and goes out when it stops beaconing.
    ports.set(node.state.port, node);
  }

  /** The node was heard from another address or port: later writes and matches use the new one. */
  move(node: CoapNode, address: string, port: number): void {
    this.remove(node);
    node.state.address = address;
    node.state.port = port;
    this.add(node);
  }

  remove(node: CoapNode): void {
    const ports = this.byEndpoint.get(node.state.address);
    if (ports === undefined || ports.get(node.state.port) !== node) return;
    ports.delete(node.state.port);
    if (ports.size === 0) this.byEndpoint.delete(node.state.address);
  }

  clear(): void {
    this.byEndpoint.clear();
  }

  /**
   * The node a value post came from: the node whose last beacon came from this address and port (RIOT posts
   * from the socket it beacons from); else, if exactly one node is known at this address, that node (nodes
   * that post from another socket than they beacon from, like pyaiot's aiocoap test node). Otherwise none:
   * with several nodes behind one address, guessing would file values under the wrong node.
   */
  findBySource(address: string, port: number): CoapNode | undefined {
    const ports = this.byEndpoint.get(address);
    if (ports === undefined) return undefined;
    const exact = ports.get(port);
    if (exact !== undefined) return exact;
    if (ports.size === 1) return ports.values().next().value;
    return undefined;
  }
}
