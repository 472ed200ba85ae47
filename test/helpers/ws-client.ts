// A WebSocket peer for tests that records every frame it receives and waits on them.
import WebSocket from 'ws';
import { waitFor } from './wait.ts';

// biome-ignore lint/suspicious/noExplicitAny: test frames are inspected loosely
export type Frame = Record<string, any>;

export class TestPeer {
  readonly frames: Frame[] = [];
  closeCode?: number;
  closeReason?: string;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      try {
        this.frames.push(JSON.parse(data.toString()));
      } catch {
        this.frames.push({ raw: data.toString() });
      }
    });
    ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
    });
  }

  /** Opens `url` with a bearer token (or none) and resolves once open. Rejects with the HTTP status on refusal. */
  static async connect(
    url: string,
    token?: string,
    options: WebSocket.ClientOptions = {},
    protocols?: string[],
  ): Promise<TestPeer> {
    const ws = new WebSocket(url, protocols, {
      ...options,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...options.headers },
    });
    const peer = new TestPeer(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString();
        });
        res.on('end', () =>
          reject(
            Object.assign(new Error(`HTTP ${res.statusCode}: ${body.trim()}`), {
              status: res.statusCode,
              body: body.trim(),
            }),
          ),
        );
      });
      ws.once('error', reject);
    });
    return peer;
  }

  /** pyaiot's client registration: sends `new` and waits for the whole snapshot (`synced`). */
  async register(): Promise<this> {
    this.send({ type: 'new', data: 'client' });
    await this.next((f) => f.type === 'synced', 'the snapshot to end');
    return this;
  }

  send(frame: Frame | string): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The first frame (from `from` on) matching `match`. */
  async next(match: (f: Frame) => boolean, what: string, timeoutMs?: number): Promise<Frame> {
    return waitFor(() => this.frames.find(match), what, timeoutMs);
  }

  async closed(timeoutMs?: number): Promise<{ code: number; reason: string }> {
    await waitFor(() => this.closeCode !== undefined, 'the socket to close', timeoutMs);
    return { code: this.closeCode!, reason: this.closeReason ?? '' };
  }

  close(): void {
    this.ws.terminate();
  }
}
