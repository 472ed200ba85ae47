// Writes to WebSocket nodes (pyaiot §6 plus our `id`/`ack`): a node that never acknowledges gets `delivered` as
// soon as the frame is handed to its socket; one that acknowledges (`hello` with ack, or an earlier `ack`) gets
// `ok` or `error` from its ack, or `timeout` after --write-timeout-ms. One table of pending writes per gateway.
import type { Json } from '../../services/protocol/messages.ts';
import type { WriteOutcome } from '../common/adapter.ts';
import type { NodeAck } from './codec.ts';
import { writeFrame } from './codec.ts';
import { type NodeSession, NodeSocket } from './node-session.ts';

interface PendingWrite {
  session: NodeSession;
  resolve: (outcome: WriteOutcome) => void;
  timer: NodeJS.Timeout;
}

export interface WriteLimits {
  writeTimeoutMs: number;
  /** Unsent bytes queued to one node before writes to it are refused (`node-busy`). */
  nodeBufferBytes: number;
}

export class PendingWrites {
  private readonly pending = new Map<string, PendingWrite>();
  private seq = 0;

  constructor(private readonly limits: WriteLimits) {}

  async write(session: NodeSession, endpoint: string, payload: Json): Promise<WriteOutcome> {
    if (session.ws.readyState !== NodeSocket.OPEN) return { result: 'error', reason: 'node-offline' };
    if (session.ws.bufferedAmount > this.limits.nodeBufferBytes) return { result: 'error', reason: 'node-busy' };
    this.seq = (this.seq + 1) % Number.MAX_SAFE_INTEGER;
    const id = this.seq.toString(36);
    session.ws.send(writeFrame(endpoint, payload, id));
    // A node that never acknowledges (pyaiot's) gets `delivered` at once: the frame was handed to its socket.
    if (!session.acks) return { result: 'delivered' };
    const ms = this.limits.writeTimeoutMs;
    return new Promise<WriteOutcome>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ result: 'timeout', reason: `no ack within ${ms} ms` });
      }, ms);
      timer.unref();
      this.pending.set(id, { session, resolve, timer });
    });
  }

  /** The node's answer to one of its writes; false when no such write is pending for this session. */
  ack(session: NodeSession, ack: NodeAck): boolean {
    const p = this.pending.get(ack.id);
    if (p === undefined || p.session !== session) return false;
    this.pending.delete(ack.id);
    clearTimeout(p.timer);
    p.resolve(ack.result === 'ok' ? { result: 'ok' } : { result: 'error', reason: ack.reason ?? 'node refused' });
    return true;
  }

  /** Ends the session's pending writes with an error (it closed, was replaced, refused...). */
  fail(session: NodeSession, reason: string): void {
    if (this.pending.size === 0) return;
    for (const [id, p] of this.pending) {
      if (p.session !== session) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.resolve({ result: 'error', reason });
    }
  }

  /** Ends every pending write (the gateway stops). */
  failAll(reason: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve({ result: 'error', reason });
      this.pending.delete(id);
    }
  }
}
