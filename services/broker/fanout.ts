// Broadcast without per-recipient work: a message is framed once (RFC 6455 §5.2, server frames are unmasked)
// and the same bytes are written to every socket. Sockets are corked for the rest of the event-loop turn, so
// a burst of messages leaves as one writev per client instead of one syscall per message.
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

function headerLength(len: number): number {
  return len < 126 ? 2 : len < 65536 ? 4 : 10;
}

function writeHeader(frame: Buffer, len: number): void {
  frame[0] = 0x81; // FIN + opcode 1 (text)
  if (len < 126) {
    frame[1] = len;
  } else if (len < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(len, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(len), 2);
  }
}

/** Builds one unmasked, final text frame around `payload`. */
export function textFrame(payload: Uint8Array): Buffer {
  const len = payload.length;
  const frame = Buffer.allocUnsafe(headerLength(len) + len);
  writeHeader(frame, len);
  frame.set(payload, headerLength(len));
  return frame;
}

/**
 * Encodes `text` straight into a frame, with no intermediate buffer. `payload` is a view of the frame's
 * body, so the same bytes can go on the bus and, unchanged, to the sockets.
 */
export function textFrameOf(text: string): { frame: Buffer; payload: Buffer } {
  const len = Buffer.byteLength(text);
  const offset = headerLength(len);
  const frame = Buffer.allocUnsafe(offset + len);
  writeHeader(frame, len);
  frame.write(text, offset);
  return { frame, payload: frame.subarray(offset) };
}

/** The raw socket under a `ws` connection. `ws` keeps it in a private field; this is the one place that knows. */
export function rawSocket(ws: WebSocket): Socket | undefined {
  return (ws as unknown as { _socket?: Socket })._socket;
}

export class CorkedWriter {
  private corked: Socket[] = [];
  private scheduled = false;
  private readonly flush = (): void => {
    this.scheduled = false;
    const sockets = this.corked;
    this.corked = [];
    for (const s of sockets) s.uncork();
  };

  /** Queues `frame` on `socket`; bytes leave at the end of this event-loop turn. */
  write(socket: Socket, frame: Buffer): void {
    if (socket.writableCorked === 0) {
      socket.cork();
      this.corked.push(socket);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    }
    socket.write(frame);
  }
}
