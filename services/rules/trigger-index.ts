// Which rules an event may concern, found without testing every rule's globs: at 10,000 events a second through
// 100 rules the loop over all rules was most of the service's own dispatch time. Rules whose update resource is
// a literal are indexed by it; those with a glob resource are tested on every update. Write results (the
// service's own rules' writes among them) are only parsed when some rule has a write trigger. The caller still
// checks status and globs (cheap on these short lists). Rebuilt lazily after a rule's definition or the set of
// rules changes (invalidate()).
import type { RuleDescriptor } from './protocol.ts';

interface Indexed {
  descriptor?: RuleDescriptor;
}

interface Index<E> {
  literal: Map<string, E[]>;
  globs: E[];
  writes: E[];
}

export class TriggerIndex<E extends Indexed> {
  private index?: Index<E>;

  constructor(private readonly all: () => Iterable<E>) {}

  invalidate(): void {
    this.index = undefined;
  }

  /** The rules whose update trigger may match `resource`. */
  candidates(resource: string): readonly E[] {
    const ix = this.index ?? this.build();
    const literal = ix.literal.get(resource);
    return literal ?? ix.globs;
  }

  /** The rules with a write trigger. */
  writes(): readonly E[] {
    return (this.index ?? this.build()).writes;
  }

  private build(): Index<E> {
    const literal = new Map<string, E[]>();
    const globs: E[] = [];
    const writes: E[] = [];
    for (const e of this.all()) {
      if (e.descriptor?.on.write !== undefined) writes.push(e);
      const r = e.descriptor?.on.update?.resource;
      if (r === undefined) continue;
      if (r.includes('*') || r.includes('?')) globs.push(e);
      else {
        const list = literal.get(r);
        if (list === undefined) literal.set(r, [e]);
        else list.push(e);
      }
    }
    // Each resource's list carries the glob rules too: an update event allocates nothing here.
    for (const list of literal.values()) list.push(...globs);
    this.index = { literal, globs, writes };
    return this.index;
  }
}
