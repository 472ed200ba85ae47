// The WebSocket gateway's sockets and nothing else: the HTTP server nodes upgrade on, the `ws` server that
// completes the upgrade, and the two bounds that apply before any request is read: open connections per
// address (429 beyond) and --handshake-timeout-ms of idleness. Who may upgrade is the adapter's decision.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Server as WsServer, WebSocketServer } from 'ws';
import { ConnectionCounter } from '../../services/common/limits.ts';
import type { Logger } from '../../services/common/log.ts';
import { refuseUpgrade } from '../../services/common/upgrade.ts';
import { CloseCode } from '../../services/protocol/errors.ts';
import { NodeSocket } from './node-session.ts';

/** Pending TCP connections the kernel may queue: a restart makes thousands of nodes reconnect at once. */
const LISTEN_BACKLOG = 4096;

export interface WsTransportOptions {
  port: number;
  host: string;
  maxFrameBytes: number;
  handshakeTimeoutMs: number;
  closeTimeoutMs: number;
  maxConnectionsPerAddress: number;
  log: Logger;
}

export interface WsTransportEvents {
  /** An upgrade request: the adapter admits it (handleUpgrade) or refuses it (refuseUpgrade). */
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** A connection refused before any request was read, by reason (counted by the adapter). */
  onRefused(reason: 'max-connections-per-address' | 'handshake-timeout'): void;
}

/** A TCP connection of the HTTP server, with the address it is counted under (remoteAddress is gone at close). */
interface CountedSocket extends Socket {
  countedAddress?: string;
}

export class WsTransport {
  private readonly server: Server;
  private readonly wss: WsServer<typeof NodeSocket>;
  private readonly perAddress: ConnectionCounter;
  private events?: WsTransportEvents;
  // Shared handlers: one function object per gateway, not per connection. `this` is the socket.
  private readonly onTcpClose: (this: CountedSocket) => void;
  private readonly onHandshakeTimeout: (this: CountedSocket) => void;

  constructor(private readonly options: WsTransportOptions) {
    this.perAddress = new ConnectionCounter(options.maxConnectionsPerAddress);
    // headersTimeout/requestTimeout bound a slow request; Node checks them every connectionsCheckingInterval
    // (30 s by default, hence set here). A socket that sends nothing at all is caught by the idle timeout set in
    // onConnection, which ws clears (setTimeout(0)) once the upgrade completes.
    this.server = createServer(
      {
        headersTimeout: options.handshakeTimeoutMs,
        requestTimeout: options.handshakeTimeoutMs,
        connectionsCheckingInterval: Math.max(10, Math.min(1000, options.handshakeTimeoutMs / 2)),
      },
      // Plain HTTP on the node port: nothing here (metrics and health are on --http-port).
      (_req, res) => {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'not-found', message: 'nodes connect with a WebSocket upgrade to /node' }));
      },
    );
    this.server.on('connection', (socket: CountedSocket) => this.onConnection(socket));
    this.wss = new WebSocketServer<typeof NodeSocket>({
      noServer: true,
      WebSocket: NodeSocket,
      maxPayload: options.maxFrameBytes,
      perMessageDeflate: false,
      // Needed by stop() to close connections that were replaced but are still closing.
      clientTracking: true,
      // Browsers send the token as the subprotocol pair `bearer, <jwt>`; the handshake must echo one of them.
      handleProtocols: (protocols) => (protocols.has('bearer') ? 'bearer' : protocols.has('token') ? 'token' : false),
      // Not in @types/ws yet: how long a peer gets to finish the closing handshake before being destroyed.
      ...({ closeTimeout: options.closeTimeoutMs } as object),
    });
    const transport = this;
    this.onTcpClose = function () {
      if (this.countedAddress !== undefined) transport.perAddress.release(this.countedAddress);
    };
    this.onHandshakeTimeout = function () {
      transport.events?.onRefused('handshake-timeout');
      this.destroy();
    };
  }

  /** The bound port, once started (useful with `port: 0`). */
  get port(): number {
    const addr = this.server.address();
    return typeof addr === 'object' && addr !== null ? addr.port : 0;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  /** Open node connections (including replaced ones still closing). */
  get connections(): number {
    return this.wss.clients.size;
  }

  async start(events: WsTransportEvents): Promise<void> {
    this.events = events;
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', onUpgradeSocketError);
      events.onUpgrade(req, socket, head);
    });
    const { port, host } = this.options;
    await new Promise<void>((resolve, reject) => {
      // The raw error: the entry point names the flag (`--port` here, `--ws-port` under `mycelium up`).
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
  }

  /** Completes an admitted upgrade. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, adopt: (ws: NodeSocket) => void): void {
    this.wss.handleUpgrade(req, socket, head, adopt);
  }

  /** Stops accepting, closes every node with 1001, and destroys what does not close within --close-timeout-ms. */
  async stop(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const ws of this.wss.clients) ws.close(CloseCode.GoingAway, 'gateway shutting down');
    // ws destroys sockets that do not finish the closing handshake within closeTimeoutMs; this is the backstop.
    const limit = setTimeout(() => {
      for (const ws of this.wss.clients) ws.terminate();
      this.server.closeAllConnections();
    }, this.options.closeTimeoutMs + 500);
    limit.unref();
    await closed;
    clearTimeout(limit);
  }

  /**
   * Every TCP connection: counted per address (refused with 429 beyond the cap, before any request is read),
   * and given --handshake-timeout-ms of idleness before it is closed.
   */
  private onConnection(socket: CountedSocket): void {
    const address = socket.remoteAddress ?? 'unknown';
    if (!this.perAddress.acquire(address)) {
      this.events?.onRefused('max-connections-per-address');
      this.options.log.debug({ remote: address }, 'too many connections from one address; refused');
      socket.on('error', onUpgradeSocketError);
      refuseUpgrade(socket, 429, `more than ${this.options.maxConnectionsPerAddress} connections from this address`);
      return;
    }
    socket.countedAddress = address;
    socket.once('close', this.onTcpClose);
    socket.setTimeout(this.options.handshakeTimeoutMs);
    socket.on('timeout', this.onHandshakeTimeout);
  }
}

/** A socket error before the upgrade completes (peer reset) must not crash the process; ws handles later ones. */
function onUpgradeSocketError(): void {}
