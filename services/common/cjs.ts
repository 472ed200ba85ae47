// A CommonJS package loaded with a dynamic import() has its exports as named exports under Node (which reads them
// out of the package), but only as `default` once esbuild has put the package in a chunk of the bundle
// (dist/bundle/). Code that loads such a package lazily takes its exports through here so both work.

/** The package's exports object, whichever way `import()` presented it. */
export function cjsExports<T extends object>(mod: T | { default: T }, probe: keyof T): T {
  if (probe in mod) return mod as T;
  return (mod as { default: T }).default;
}
