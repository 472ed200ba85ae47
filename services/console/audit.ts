// The console's audit log (issue 12): one JSON line per request, refused ones included, appended to
// --audit-file (created 0600: it names who ran what). Writes are queued so lines never interleave, and a
// failing disk is logged, never thrown at the request.
import { appendFile, open, stat } from 'node:fs/promises';
import type { Logger } from '../common/log.ts';
import type { ExecMode, ExecParams, ExecStatus, RequesterRole } from '../protocol/console-messages.ts';
import { parseJson, stringifySafe } from '../protocol/schema.ts';

export interface AuditRecord {
  /** ISO 8601, when the request arrived. */
  time: string;
  sub: string;
  role: RequesterRole;
  node: string;
  /** `exec` for a command or shell line, `pty` for a terminal. */
  kind: 'exec' | 'pty';
  command?: string;
  /** The raw shell line (admin only). */
  shell?: string;
  params?: ExecParams;
  mode?: ExecMode;
  status: ExecStatus;
  code: number | null;
  signal: string | null;
  durationMs: number;
  bytes: number;
  truncated: boolean;
  reason?: string;
  /** The broker that took the request. */
  broker: string;
  /** How the request came: `ws`, `rest`. */
  via: string;
}

/** How much of the file's end GET /api/v1/audit reads at most (the newest lines). */
export const AUDIT_TAIL_BYTES = 4 * 1024 * 1024;

export class AuditLog {
  private queue: Promise<void> = Promise.resolve();
  private readonly memory: AuditRecord[] = [];

  constructor(
    /** --audit-file; without it the last `memoryLines` records are kept in memory only. */
    private readonly file: string | undefined,
    private readonly log: Logger,
    private readonly memoryLines = 1000,
  ) {}

  append(record: AuditRecord): void {
    if (this.file === undefined) {
      this.memory.push(record);
      if (this.memory.length > this.memoryLines) this.memory.shift();
      return;
    }
    const line = stringifySafe(record);
    if (line === undefined) return;
    const file = this.file;
    this.queue = this.queue
      .then(() => appendFile(file, `${line}\n`, { mode: 0o600 }))
      .catch((err: unknown) => this.log.error({ err, file }, 'audit line not written'));
  }

  /** Resolves once every line appended so far is on disk (tests, shutdown). */
  flush(): Promise<void> {
    return this.queue;
  }

  /** The newest `limit` records, oldest first (read from the end of the file). */
  async tail(limit: number): Promise<AuditRecord[]> {
    await this.flush();
    if (this.file === undefined) return this.memory.slice(-limit);
    let size: number;
    try {
      size = (await stat(this.file)).size;
    } catch {
      return [];
    }
    const length = Math.min(size, AUDIT_TAIL_BYTES);
    const handle = await open(this.file, 'r');
    try {
      const buf = Buffer.alloc(length);
      await handle.read(buf, 0, length, size - length);
      const lines = buf.toString('utf8').split('\n');
      // The first line may be cut when the file is larger than the tail read.
      if (length < size) lines.shift();
      const out: AuditRecord[] = [];
      for (let i = lines.length - 1; i >= 0 && out.length < limit; i--) {
        if (lines[i] === '') continue;
        const json = parseJson(lines[i]);
        if (json.ok && typeof json.value === 'object' && json.value !== null) out.push(json.value as AuditRecord);
      }
      return out.reverse();
    } finally {
      await handle.close();
    }
  }
}
