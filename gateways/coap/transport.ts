// The CoAP gateway's sockets and nothing else: the UDP server socket nodes POST to (node-coap's server on it),
// the client socket requests to nodes leave from (node-coap's agent), and one request helper that never rejects.
// What the requests mean (discovery, observe, writes) is the adapter's; the bytes are codec.ts's.
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import {
  Agent,
  createServer,
  type IncomingMessage,
  type ObserveReadStream,
  type OutgoingMessage,
  type Server,
} from 'coap';
import type { Logger } from '../../services/common/log.ts';
import { PROBE_TOKEN_BYTES, resetFor } from './codec.ts';

/** Asked of the kernel for the gateway's UDP socket; bursts of beacons must not overflow the default ~200 KiB. */
const RECV_BUFFER_BYTES = 4 * 1024 * 1024;
/** Error texts node-coap passes to its error path for valid packets it refuses (not malformed ones). */
const LIB_REFUSALS = ['Observe can only be present', 'FETCH requests must contain'];

export type Answer =
  | { kind: 'response'; code: string; payload: Buffer }
  | { kind: 'timeout' }
  | { kind: 'error'; err: Error };

/** Where a request goes. */
export interface Target {
  address: string;
  port: number;
}

export interface CoapTransportOptions {
  host: string;
  port: number;
  dedupCacheBytes: number;
  requestTimeoutMs: number;
  log: Logger;
}

export interface CoapServerEvents {
  onRequest(req: IncomingMessage, res: OutgoingMessage): void;
  /** A datagram that is not CoAP (a Reset was sent if it was Confirmable), or one node-coap refuses. */
  onRefused(kind: 'malformed' | 'refused-by-library', rsinfo: AddressInfo, reason: string): void;
}

export class CoapTransport {
  private socket?: Socket;
  private clientSocket?: Socket;
  private server?: Server;
  private agent?: Agent;
  private lastRaw?: Buffer;

  constructor(private readonly options: CoapTransportOptions) {}

  /** The UDP port nodes post to (the real one when configured with 0); undefined before start. */
  get port(): number | undefined {
    return (this.socket?.address() as AddressInfo | undefined)?.port;
  }

  get bound(): boolean {
    return this.agent !== undefined;
  }

  async start(events: CoapServerEvents): Promise<void> {
    const o = this.options;
    const socket = await bindUdp(o.host, o.port);
    this.socket = socket;
    try {
      socket.setRecvBufferSize(RECV_BUFFER_BYTES);
    } catch {
      // The kernel caps it at net.core.rmem_max; the default still works at lower rates.
    }
    // Remember the datagram being handled: node-coap reports a parse failure without the bytes.
    socket.on('message', (msg) => {
      this.lastRaw = msg;
    });
    const family = socket.address().family === 'IPv6' ? 'IPv6' : 'IPv4';
    const server = createServer({ type: family === 'IPv6' ? 'udp6' : 'udp4', cacheSize: o.dedupCacheBytes });
    this.server = server;
    server._sendError = (payload, rsinfo, packet) => this.onLibError(events, payload, rsinfo, packet !== undefined);
    server.on('request', (req: IncomingMessage, res: OutgoingMessage) => events.onRequest(req, res));
    server.on('error', (err: Error) => o.log.warn({ err }, 'CoAP server socket error'));
    await new Promise<void>((resolve) => server.listen(socket, () => resolve()));
    // Requests to nodes leave from their own socket, so responses never meet the server's request path.
    this.clientSocket = await bindUdp(family === 'IPv6' ? '::' : '0.0.0.0', 0);
    this.agent = new Agent({ socket: this.clientSocket });
    this.agent.on('error', (err: Error) => o.log.warn({ err }, 'CoAP client socket error'));
    o.log.info({ port: this.port, family }, 'CoAP socket bound');
  }

  async stop(): Promise<void> {
    this.server?.close();
    this.agent?.close();
    this.agent = undefined;
    await Promise.all([closeUdp(this.socket), closeUdp(this.clientSocket)]);
  }

  /**
   * node-coap's error path: a datagram it could not parse (packet undefined), or a valid one it refuses.
   * The library would answer a parse failure with 5.00 to the sender's port on localhost; instead, per RFC 7252
   * §4.2, a Confirmable message is rejected with a Reset (its header is readable) and anything else dropped.
   */
  private onLibError(events: CoapServerEvents, payload: Buffer, rsinfo: AddressInfo, parsed: boolean): void {
    const text = payload.toString();
    if (parsed || LIB_REFUSALS.some((p) => text.startsWith(p))) {
      events.onRefused('refused-by-library', rsinfo, text);
      return;
    }
    events.onRefused('malformed', rsinfo, text);
    const rst = this.lastRaw === undefined ? undefined : resetFor(this.lastRaw);
    if (rst !== undefined) this.socket?.send(rst, rsinfo.port, rsinfo.address);
  }

  /**
   * One request to a node, answered, timed out (--request-timeout-ms) or failed; never rejects. Confirmable,
   * except the probe: non-confirmable (no retransmissions to an unverified address), no path, a 4-byte token.
   */
  request(target: Target, method: 'GET' | 'PUT', pathname: string | undefined, payload?: Buffer): Promise<Answer> {
    return this.send(target, { method, pathname }, payload);
  }

  probe(target: Target): Promise<Answer> {
    return this.send(target, { method: 'GET', confirmable: false, token: randomBytes(PROBE_TOKEN_BYTES) });
  }

  private send(target: Target, params: object, payload?: Buffer): Promise<Answer> {
    const agent = this.agent;
    if (agent === undefined) return Promise.resolve({ kind: 'error', err: new Error('gateway stopped') });
    const req = agent.request({ hostname: target.address, port: target.port, ...params });
    return new Promise<Answer>((resolve) => {
      const timer = setTimeout(() => {
        agent.abort(req);
        resolve({ kind: 'timeout' });
      }, this.options.requestTimeoutMs);
      req.on('response', (res: IncomingMessage) => {
        clearTimeout(timer);
        resolve({ kind: 'response', code: res.code, payload: res.payload });
      });
      req.on('timeout', () => {
        clearTimeout(timer);
        resolve({ kind: 'timeout' });
      });
      req.on('error', (err: Error) => {
        clearTimeout(timer);
        resolve({ kind: 'error', err });
      });
      req.end(payload);
    });
  }

  /**
   * An RFC 7641 registration (GET with Observe 0): the notification stream once the node answers, or undefined
   * when it does not answer in time (or the gateway stopped).
   */
  observe(target: Target, pathname: string): Promise<ObserveReadStream | undefined> {
    const agent = this.agent;
    if (agent === undefined) return Promise.resolve(undefined);
    const req = agent.request({ hostname: target.address, port: target.port, method: 'GET', pathname, observe: true });
    return new Promise((resolve) => {
      const failed = (err?: Error) => {
        clearTimeout(timer);
        if (err !== undefined) this.options.log.debug({ err, pathname }, 'observe registration failed');
        resolve(undefined);
      };
      const timer = setTimeout(() => {
        agent.abort(req);
        failed();
      }, this.options.requestTimeoutMs);
      req.on('error', failed);
      req.on('response', (res: ObserveReadStream) => {
        clearTimeout(timer);
        res.on('error', () => {});
        resolve(res);
      });
      req.end();
    });
  }
}

/** Binds a UDP socket; "::" is dual-stack, and falls back to IPv4 where the host has no IPv6. */
export async function bindUdp(host: string, port: number): Promise<Socket> {
  const v6 = host.includes(':');
  try {
    return await bindOnce(v6 ? 'udp6' : 'udp4', host, port);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL' || code === 'EPROTONOSUPPORT')) {
      return bindOnce('udp4', '0.0.0.0', port);
    }
    throw err;
  }
}

function bindOnce(type: 'udp4' | 'udp6', host: string, port: number): Promise<Socket> {
  const socket = createSocket({ type, ipv6Only: false });
  return new Promise<Socket>((resolve, reject) => {
    const onError = (err: Error) => {
      socket.close();
      reject(err);
    };
    socket.once('error', onError);
    socket.bind(port, host, () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

export function closeUdp(socket: Socket | undefined): Promise<void> {
  if (socket === undefined) return Promise.resolve();
  return new Promise<void>((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}
