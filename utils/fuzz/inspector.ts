// A minimal Chrome DevTools Protocol client for a child started with --inspect=127.0.0.1:0: forces a full GC
// and reads process.memoryUsage() there. The garbage run measures memory after a forced GC so that what it
// compares is memory the process keeps, not garbage V8 has not collected yet.
import WebSocket from 'ws';

export interface ChildMemory {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

const INSPECTOR_URL = /Debugger listening on (ws:\/\/\S+)/;

/** The inspector's WebSocket URL from the child's stderr, once it printed it. */
export function inspectorUrl(stderr: string): string | undefined {
  return INSPECTOR_URL.exec(stderr)?.[1];
}

export class InspectorClient {
  private nextId = 1;
  private readonly pending = new Map<number, (result: unknown) => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: WebSocket.RawData) => {
      const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: unknown };
      if (msg.id === undefined) return;
      const resolve = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      resolve?.(msg.error === undefined ? msg.result : { error: msg.error });
    });
  }

  static async connect(url: string): Promise<InspectorClient> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new InspectorClient(ws);
  }

  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Two full collections (the second frees what finalizers of the first released), then the process's memory. */
  async memoryAfterGc(): Promise<ChildMemory> {
    await this.send('HeapProfiler.collectGarbage');
    await this.send('HeapProfiler.collectGarbage');
    const r = (await this.send('Runtime.evaluate', {
      expression: 'JSON.stringify(process.memoryUsage())',
      returnByValue: true,
    })) as { result?: { value?: string } };
    if (typeof r.result?.value !== 'string') throw new Error(`inspector: no memoryUsage (${JSON.stringify(r)})`);
    return JSON.parse(r.result.value) as ChildMemory;
  }

  close(): void {
    this.ws.close();
  }
}
