// How the CoAP gateway learns a node's resources (pyaiot-protocol §4.3, with a real RFC 6690 parser): prove
// the node is reachable where it beacons from (probe), then GET /.well-known/core, then read or observe each
// link. A bounded queue keeps a gateway restart (thousands of beacons at once) from becoming a request storm.
import { KeyedRateLimiter } from '../../services/common/limits.ts';
import { isIdentifier } from '../../services/protocol/schema.ts';
import { decodeUtf8, PROBE_BYTES } from './codec.ts';
import { type CoapContext, reportValue } from './context.ts';
import type { CoapNode } from './endpoint-index.ts';
import { parseLinkFormat, resourceName } from './link-format.ts';
import type { Observations } from './observe.ts';
import type { Answer } from './transport.ts';

export class Discovery {
  private queue: CoapNode[] = [];
  private head = 0;
  private active = 0;
  private running = false;
  private readonly limiter: KeyedRateLimiter;

  constructor(
    private readonly ctx: CoapContext,
    private readonly observations: Observations,
    /** The gateway's own resources of a node (protocol, ip): they count against the per-node cap. */
    private readonly ownResourceCount: number,
  ) {
    const n = ctx.config.discoveriesPerMinute;
    this.limiter = new KeyedRateLimiter({ perSecond: n / 60, burst: n });
  }

  /** Nodes waiting for discovery. */
  get queued(): number {
    return this.queue.length - this.head;
  }

  start(): void {
    this.running = true;
  }

  stop(): void {
    this.running = false;
    this.queue = [];
    this.head = 0;
  }

  enqueue(node: CoapNode): void {
    if (node.state.discovering) return;
    node.state.discoveryFailedAt = 0;
    node.state.discovering = true;
    this.queue.push(node);
    this.pump();
  }

  private pump(): void {
    const { ctx } = this;
    while (this.running && this.active < ctx.config.discoveryConcurrency && this.queued > 0) {
      const node = this.queue[this.head++];
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      this.active++;
      const generation = node.state.generation;
      this.discover(node)
        .catch((err: unknown) => ctx.log.warn({ err, uid: node.uid }, 'discovery failed'))
        .finally(() => {
          node.state.discovering = false;
          this.active--;
          // A reset while this discovery ran made its results void: discover the new generation.
          if (
            node.state.generation !== generation &&
            node.state.wantDiscovery &&
            this.running &&
            ctx.core.node(node.uid) === node
          ) {
            this.enqueue(node);
          }
          this.pump();
        });
    }
  }

  /** Requests are sent one after the other: RFC 7252 §4.7 NSTART = 1 outstanding interaction per node. */
  private async discover(node: CoapNode): Promise<void> {
    const { ctx } = this;
    const { counters, config } = ctx;
    const gen = node.state.generation;
    if (!ctx.alive(node, gen)) return;
    if (node.state.serve === undefined && !(await this.verify(node, gen))) return;
    if (!ctx.alive(node, gen)) return;
    // Discovery costs the node (and the network) 1 + N requests: a bucket per source address. A refused one
    // stays due and is tried again at the node's next beacon.
    if (!this.limiter.take(node.state.address)) {
      counters.discoveryRateLimited.inc();
      ctx.warnOnce('discovery-rate', { uid: node.uid, address: node.state.address }, 'discovery deferred: rate limit');
      return;
    }
    node.state.wantDiscovery = false;
    node.status = 'discovering';
    ctx.core.noteOut();
    const answer = await ctx.transport.request(ctx.target(node), 'GET', '/.well-known/core');
    if (!ctx.alive(node, gen)) return;
    if (answer.kind !== 'response') return this.failed(node, answer, '/.well-known/core');
    ctx.core.noteIn();
    if (answer.code !== '2.05') {
      counters.discoveryError.inc();
      ctx.log.warn({ uid: node.uid, code: answer.code }, 'discovery refused; node kept with what it has');
      return;
    }
    const text = decodeUtf8(answer.payload);
    const { links, errors } = parseLinkFormat(text ?? '');
    if (text === undefined || errors.length > 0) {
      counters.linkFormatErrors.inc();
      ctx.log.warn({ uid: node.uid, errors: text === undefined ? ['not UTF-8'] : errors }, 'bad link-format');
    }
    // protocol and ip are the gateway's own resources; the rest of the per-node cap is for the node's links.
    const room = config.maxResourcesPerNode - this.ownResourceCount;
    let taken = 0;
    for (const link of links) {
      const name = resourceName(link.target);
      if (name === undefined) continue;
      if (isIdentifier(name) !== undefined) {
        counters.bad('node-bad-resource').inc();
        ctx.core.noteError('node-bad-resource');
        ctx.warnOnce('node-bad-resource', { uid: node.uid, name: JSON.stringify(name.slice(0, 64)) }, 'bad link');
        continue;
      }
      if (++taken > room) {
        // No GET storm for a node that lists thousands of links: the core would refuse them anyway.
        ctx.core.noteRefusal('max-resources', node.uid);
        ctx.warnOnce('max-resources', { uid: node.uid, links: links.length }, 'node lists more resources than allowed');
        break;
      }
      if (link.obs && !config.ignoreObs) {
        const result = await this.observations.start(node, gen, name);
        if (!ctx.alive(node, gen)) return;
        if (result === 'no-answer') return this.failed(node, { kind: 'timeout' }, name);
        continue;
      }
      ctx.core.noteOut();
      const value = await ctx.transport.request(ctx.target(node), 'GET', `/${name}`);
      if (!ctx.alive(node, gen)) return;
      if (value.kind !== 'response') return this.failed(node, value, name);
      ctx.core.noteIn();
      reportValue(ctx, node, name, value.code, value.payload);
    }
    node.status = 'online';
    counters.discoveryOk.inc();
  }

  /**
   * Proves that the node receives at the address it beacons from before anything but answers is sent there:
   * one 8-byte NON probe per beacon, paid from the bytes the node sent (credit). The probe goes to the beacon's
   * source port, then (at the next beacon) to --fallback-node-port, for nodes that beacon from another socket
   * than they serve on (libcoap's coap-client, pyaiot's aiocoap test node). Node's UDP sockets do not report ICMP
   * port-unreachable on an unconnected socket, so "no answer within --request-timeout-ms" is the signal.
   * Returns true once verified.
   */
  private async verify(node: CoapNode, gen: number): Promise<boolean> {
    const { ctx } = this;
    const s = node.state;
    const ports = this.probePorts(node);
    if (s.probeStep >= ports.length) s.probeStep = 0;
    if (!s.probeReady || s.credit < PROBE_BYTES) {
      ctx.counters.probes('waiting').inc();
      return false; // stays due: the next beacon brings a probe and credit
    }
    s.probeReady = false;
    s.credit -= PROBE_BYTES;
    const step = s.probeStep;
    const port = ports[step];
    ctx.core.noteOut();
    const answer = await ctx.transport.probe({ address: s.address, port });
    if (!ctx.alive(node, gen)) return false;
    // A RST (code 0.00) is matched by Message ID only, not by our token: it proves nothing.
    if (answer.kind === 'response' && answer.code !== '0.00') {
      ctx.counters.probes('ok').inc();
      ctx.core.noteIn();
      s.serve = ctx.config.nodePort > 0 ? 'configured' : step === 0 ? 'beacon' : 'fallback';
      s.probeStep = 0;
      s.credit = 0;
      node.status = 'discovering';
      if (s.serve === 'fallback') ctx.log.info({ uid: node.uid, port }, 'node answers at the fallback port');
      return true;
    }
    ctx.counters.probes(answer.kind === 'response' ? 'reset' : answer.kind).inc();
    s.probeStep = step + 1;
    if (s.probeStep >= ports.length) {
      s.probeStep = 0;
      s.wantDiscovery = false;
      this.failed(node, answer.kind === 'response' ? { kind: 'timeout' } : answer, 'probe');
    }
    return false;
  }

  private probePorts(node: CoapNode): number[] {
    const c = this.ctx.config;
    if (c.nodePort > 0) return [c.nodePort];
    const port = node.state.port;
    return c.fallbackNodePort > 0 && c.fallbackNodePort !== port ? [port, c.fallbackNodePort] : [port];
  }

  private failed(node: CoapNode, answer: Answer, what: string): void {
    const { ctx } = this;
    node.state.discoveryFailedAt = Date.now();
    if (answer.kind === 'timeout') ctx.counters.discoveryTimeout.inc();
    else ctx.counters.discoveryError.inc();
    ctx.core.noteError(answer.kind === 'timeout' ? 'discovery-timeout' : 'discovery-error');
    ctx.log.warn(
      { uid: node.uid, resource: what, err: answer.kind === 'error' ? answer.err : undefined },
      answer.kind === 'timeout' ? 'node did not answer discovery; kept with what it has' : 'discovery failed',
    );
  }
}
