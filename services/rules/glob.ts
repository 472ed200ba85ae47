// Node globs of rule triggers: `*` is any run of characters, `?` one character, the rest literal. Matched by
// the classic two-pointer algorithm (back up to the last `*` only), O(pattern × text) at worst: a regular
// expression built from `*a*a*a*b` would backtrack exponentially on a long uid.

export function globMatches(glob: string, value: string): boolean {
  if (glob === '*' || glob === value) return true;
  let g = 0;
  let v = 0;
  let star = -1;
  let resume = 0;
  while (v < value.length) {
    const c = glob[g];
    if (c === '*') {
      star = g++;
      resume = v;
    } else if (c !== undefined && (c === '?' || c === value[v])) {
      g++;
      v++;
    } else if (star >= 0) {
      g = star + 1;
      v = ++resume;
    } else {
      return false;
    }
  }
  while (glob[g] === '*') g++;
  return g === glob.length;
}
