// The rule API as the editor offers it: the members of the interfaces in services/rules/rule.ts, read from that
// file's own text (rules-editor.ts imports it with Vite's `?raw`, so the text is bundled at build time). The
// completions and the reference shown beside the editor therefore come from the declarations `mycelium rules
// check` type-checks against and cannot drift from them. Plain string work, no DOM: unit-tested in Node.

export interface ApiMember {
  name: string;
  /** The declaration as written, on one line (`write(uid: string, …): Promise<WriteOutcome>`). */
  detail: string;
  /** Its JSDoc comment, when it has one. */
  doc?: string;
  method: boolean;
}

export type RuleApi = ReadonlyMap<string, ApiMember[]>;

const OPEN = '{([<';
const CLOSE = '})]>';

/** The index just past the bracket that closes the one at `start` (`{`), or -1. */
function closing(text: string, start: number): number {
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) return -1;
      i = end + 1;
    } else if (c === '/' && text[i + 1] === '/') {
      const end = text.indexOf('\n', i);
      i = end < 0 ? text.length : end;
    } else if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return i + 1;
  }
  return -1;
}

/** Splits an interface body into its members, each with the JSDoc comment just before it. */
function members(body: string): ApiMember[] {
  const out: ApiMember[] = [];
  let depth = 0;
  let current = '';
  let doc: string | undefined;
  const flush = () => {
    const text = current.replace(/\s+/g, ' ').replace(/\( /g, '(').replace(/,? \)/g, ')').trim();
    current = '';
    const m = /^(?:readonly\s+)?([A-Za-z_$][\w$]*)\??\s*(<[^(]*>)?\s*([(:])/.exec(text);
    if (m !== null) {
      const member: ApiMember = { name: m[1], detail: text.replace(/^readonly\s+/, ''), method: m[3] === '(' };
      if (doc !== undefined) member.doc = doc;
      out.push(member);
    }
    doc = undefined;
  };
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === '/' && body[i + 1] === '*') {
      const end = body.indexOf('*/', i + 2);
      const comment = body.slice(i + 2, end < 0 ? body.length : end);
      if (depth === 0 && current.trim() === '') {
        doc = comment
          .replace(/^\*|\n\s*\*/g, ' ')
          .replace(/\s+/g, ' ')
          .trim();
      }
      i = end < 0 ? body.length : end + 1;
      continue;
    }
    if (c === '/' && body[i + 1] === '/') {
      const end = body.indexOf('\n', i);
      i = end < 0 ? body.length : end;
      continue;
    }
    // `=>` is an arrow, not a closing angle bracket.
    if (c === '>' && body[i - 1] === '=') {
      current += c;
      continue;
    }
    if (OPEN.includes(c)) depth++;
    else if (CLOSE.includes(c)) depth--;
    if (c === ';' && depth === 0) flush();
    else current += c;
  }
  if (current.trim() !== '') flush();
  return out;
}

/** Every exported interface of the rule API's source text, by name. */
export function parseRuleApi(text: string): RuleApi {
  const api = new Map<string, ApiMember[]>();
  const re = /export interface ([A-Za-z_$][\w$]*)[^{]*\{/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const open = m.index + m[0].length - 1;
    const end = closing(text, open);
    if (end < 0) break;
    api.set(m[1], members(text.slice(open + 1, end - 1)));
    re.lastIndex = end;
  }
  return api;
}

/** The fields of every event a rule receives (the interfaces named `…Event`), once each. */
function eventFields(api: RuleApi): ApiMember[] {
  const seen = new Map<string, ApiMember>();
  for (const [name, list] of api) {
    if (!name.endsWith('Event')) continue;
    for (const m of list) if (!seen.has(m.name)) seen.set(m.name, m);
  }
  return [...seen.values()];
}

export interface CompletionSpot {
  /** How many characters before the cursor the completed word starts. */
  back: number;
  members: ApiMember[];
  /** Property names of the definition (`name`, `on`, `update`…) rather than members after a dot. */
  keys: boolean;
}

/**
 * What to complete at the end of `before` (the text of the line up to the cursor): members of `ctx.`,
 * `ctx.state.`, `ctx.log.` and of an event (`event.`, `e.`), or the keys of a rule definition and its triggers.
 */
export function completionAt(before: string, api: RuleApi): CompletionSpot | undefined {
  const dotted = /\b(ctx|context|event|ev|e)((?:\.[A-Za-z_$][\w$]*)*)\.([\w$]*)$/.exec(before);
  if (dotted !== null) {
    const [, root, path, word] = dotted;
    let list: ApiMember[] | undefined;
    if (root === 'ctx' || root === 'context') {
      list = path === '' ? api.get('RuleContext') : path === '.state' ? api.get('RuleState') : undefined;
      if (path === '.log') list = api.get('RuleLog');
    } else if (path === '') list = eventFields(api);
    return list === undefined ? undefined : { back: word.length, members: list, keys: false };
  }
  const word = /(?:^|[\s{,])([A-Za-z_$][\w$]*)$/.exec(before);
  if (word === null) return undefined;
  const keys = [...(api.get('RuleDefinition') ?? []), ...(api.get('Triggers') ?? [])];
  return { back: word[1].length, members: keys, keys: true };
}
