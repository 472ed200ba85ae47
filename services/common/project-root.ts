// The folder of Mycelium's package.json, found by walking up from this file: it sits in services/common/ when the
// sources run, in dist/services/common/ after tsc, and in dist/bundle/ after the bundle, so no fixed number of
// `..` is right for all three.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const PACKAGE_NAME = 'mycelium';

let found: { dir: string; version: string } | undefined;

function find(): { dir: string; version: string } {
  let dir = import.meta.dirname;
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === PACKAGE_NAME) return { dir, version: typeof pkg.version === 'string' ? pkg.version : '0.0.0' };
    } catch {
      // No package.json here (or not ours): look further up.
    }
    const up = dirname(dir);
    // At the file system's root without finding it: an install without its package.json; the working folder is
    // the best guess left.
    if (up === dir) return { dir: process.cwd(), version: '0.0.0' };
    dir = up;
  }
}

/** The checkout's (or the installed package's) root folder. */
export function projectRoot(): string {
  found ??= find();
  return found.dir;
}

/** Mycelium's version, from its package.json. */
export function projectVersion(): string {
  found ??= find();
  return found.version;
}
