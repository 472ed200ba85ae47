// Node globs of rule triggers: `*` is any run of characters, `?` one character, the rest literal. Compiled once
// per trigger to an anchored regular expression (no backtracking blow-up: `*` becomes a lazy-free `.*` on
// identifiers of at most 256 characters).

const cache = new Map<string, RegExp>();

export function globToRegExp(glob: string): RegExp {
  let re = cache.get(glob);
  if (re === undefined) {
    let src = '';
    for (const ch of glob) {
      if (ch === '*') src += '.*';
      else if (ch === '?') src += '.';
      else src += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
    }
    re = new RegExp(`^${src}$`, 's');
    if (cache.size < 10_000) cache.set(glob, re);
  }
  return re;
}

export function globMatches(glob: string, value: string): boolean {
  return glob === '*' || glob === value || globToRegExp(glob).test(value);
}
