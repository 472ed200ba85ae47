// A size limit on inbound MQTT control packets for the embedded broker. aedes has no such option: its parser
// buffers a packet whole before looking at it, and the remaining length field allows 256 MB ([MQTT-2.2.3]),
// so one client could make the broker hold that much. The guard reads only the fixed headers as bytes pass and
// cuts the connection as soon as a header announces more than the limit. MQTT 3.1.1 has no reason code for this;
// closing the network connection is the server's only answer ([MQTT-4.8.0-1]).
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

export type GuardRefusal = 'oversized' | 'malformed-length';

enum State {
  Header = 0,
  Length = 1,
  Body = 2,
}

/** Walks packet boundaries across chunks; O(packets) per chunk, no copies. */
export class PacketSizeScanner {
  private state = State.Header;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private skip = 0;

  constructor(private readonly maxRemainingLength: number) {}

  /** Returns a refusal once a packet breaks the rules; the connection must then be closed. */
  feed(chunk: Buffer): GuardRefusal | undefined {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      switch (this.state) {
        case State.Header:
          i++; // packet type and flags
          this.state = State.Length;
          this.length = 0;
          this.multiplier = 1;
          this.lengthBytes = 0;
          break;
        case State.Length: {
          const b = chunk[i++];
          this.length += (b & 0x7f) * this.multiplier;
          this.multiplier *= 128;
          this.lengthBytes++;
          if (b & 0x80) {
            // [MQTT-2.2.3]: the remaining length takes at most four bytes.
            if (this.lengthBytes === 4) return 'malformed-length';
            break;
          }
          if (this.length > this.maxRemainingLength) return 'oversized';
          this.skip = this.length;
          this.state = this.skip === 0 ? State.Header : State.Body;
          break;
        }
        case State.Body: {
          const take = Math.min(this.skip, n - i);
          i += take;
          this.skip -= take;
          if (this.skip === 0) this.state = State.Header;
          break;
        }
      }
    }
    return undefined;
  }
}

/**
 * The socket as aedes sees it: reads pass through the scanner, writes go straight to the socket (batched when
 * mqtt-packet corks the stream, so a packet written in pieces leaves in one syscall).
 */
export class GuardedConnection extends Duplex {
  private readonly scanner: PacketSizeScanner;

  constructor(
    readonly socket: Socket,
    maxRemainingLength: number,
    onRefused: (reason: GuardRefusal) => void,
  ) {
    super({ allowHalfOpen: false, decodeStrings: true });
    this.scanner = new PacketSizeScanner(maxRemainingLength);
    socket.on('data', (chunk: Buffer) => {
      const refusal = this.scanner.feed(chunk);
      if (refusal !== undefined) {
        socket.pause();
        onRefused(refusal);
        this.destroy();
        return;
      }
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send(chunk, callback);
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    const data = chunks.length === 1 ? chunks[0].chunk : Buffer.concat(chunks.map((c) => c.chunk));
    this.send(data, callback);
  }

  private send(data: Buffer, callback: (error?: Error | null) => void): void {
    if (this.socket.write(data)) callback();
    else this.socket.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(error);
  }
}
