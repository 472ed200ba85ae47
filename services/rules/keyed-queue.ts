// Jobs run in order per key and concurrently across keys: a rule sees one node's events in order (the key is
// the uid) while a slow write to one node does not hold up the others. Bounded: at most `maxQueued` jobs wait.

type Job = () => Promise<void>;

export class KeyedQueue {
  private readonly queues = new Map<string, Job[]>();
  private readonly active = new Set<string>();
  private runnable: string[] = [];
  private queued = 0;

  constructor(
    private readonly concurrency: number,
    private readonly maxQueued: number,
  ) {}

  get size(): number {
    return this.queued;
  }

  /** False (and the job is not taken) when `maxQueued` jobs already wait. */
  push(key: string, job: Job): boolean {
    if (this.queued >= this.maxQueued) return false;
    let q = this.queues.get(key);
    if (q === undefined) {
      q = [];
      this.queues.set(key, q);
    }
    q.push(job);
    this.queued++;
    if (q.length === 1 && !this.active.has(key)) this.runnable.push(key);
    this.pump();
    return true;
  }

  /** Drops every waiting job (running ones finish); returns how many were dropped. */
  clear(): number {
    const n = this.queued;
    this.queues.clear();
    this.runnable = [];
    this.queued = 0;
    return n;
  }

  private pump(): void {
    while (this.active.size < this.concurrency && this.runnable.length > 0) {
      const key = this.runnable.shift() as string;
      const q = this.queues.get(key);
      const job = q?.shift();
      if (job === undefined) continue;
      this.queued--;
      this.active.add(key);
      job()
        .catch(() => undefined)
        .finally(() => {
          this.active.delete(key);
          const rest = this.queues.get(key);
          if (rest !== undefined && rest.length > 0) this.runnable.push(key);
          else this.queues.delete(key);
          this.pump();
        });
    }
  }
}
