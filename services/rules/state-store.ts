// Per-rule persistent state: one JSON file per rule under --state-dir (`<name>.json`, 0600), written atomically
// a short while after the last change (a rule setting a counter per event does not cost a write per event).
// Also the list of rules an admin disabled (`disabled.json`), so a restart keeps them disabled.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../common/files.ts';
import type { Logger } from '../common/log.ts';
import { parseJson } from '../protocol/schema.ts';

export class StateStore {
  private readonly states = new Map<string, Record<string, unknown>>();
  private readonly dirty = new Set<string>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
    private readonly flushMs = 200,
  ) {}

  start(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** The rule's state (read from its file the first time). */
  get(rule: string): Record<string, unknown> {
    let s = this.states.get(rule);
    if (s === undefined) {
      s = this.read(`${rule}.json`) ?? Object.create(null);
      this.states.set(rule, s as Record<string, unknown>);
    }
    return s as Record<string, unknown>;
  }

  set(rule: string, key: string, value: unknown): void {
    const s = this.get(rule);
    if (value === undefined) delete s[key];
    else s[key] = value;
    this.dirty.add(rule);
    if (this.timer === undefined) {
      this.timer = setTimeout(() => this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  disabled(): Record<string, string> {
    return (this.read('disabled.json') as Record<string, string> | undefined) ?? {};
  }

  saveDisabled(map: Record<string, string>): void {
    this.write('disabled.json', map);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const rule of this.dirty) this.write(`${rule}.json`, this.states.get(rule) ?? {});
    this.dirty.clear();
  }

  private read(file: string): Record<string, unknown> | undefined {
    const path = join(this.dir, file);
    if (!existsSync(path)) return undefined;
    const json = parseJson(readFileSync(path, 'utf8'));
    if (!json.ok || typeof json.value !== 'object' || json.value === null || Array.isArray(json.value)) {
      this.log.warn({ file: path }, 'rule state file is not a JSON object; starting empty');
      return undefined;
    }
    return Object.assign(Object.create(null), json.value) as Record<string, unknown>;
  }

  private write(file: string, value: unknown): void {
    try {
      writeFileAtomic(join(this.dir, file), JSON.stringify(value), 0o600);
    } catch (err) {
      this.log.error({ err, file }, 'rule state not saved');
    }
  }
}
