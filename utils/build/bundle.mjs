// The second half of `npm run build`: bundles the compiled CLI (dist/cli/main.js, from tsc) and the packages it
// imports into dist/bundle/, one chunk per subcommand (each is a dynamic import). Node then reads a handful of
// files at start instead of several hundred: resolving and compiling modules was most of the broker's start-up
// (docs/benchmarks.md, "Start-up"). bin/mycelium.js runs the bundle when it exists.
//
// Left outside the bundle, loaded from node_modules at run time:
//   - native addons and optional native helpers: better-sqlite3, pg-native, bufferutil, utf-8-validate, node-pty,
//     @node-rs/* (argon2: a binary per platform, chosen at run time);
//   - packages that start worker threads or processes from their own files (pino's transports: pino,
//     thread-stream, pino-pretty), or that find files beside their own (vite, lightningcss, esbuild, typescript);
//   - pg, only loaded with --db postgres://, and test tools (playwright-core, tsx).
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const outdir = join(root, 'dist', 'bundle');

export const EXTERNAL = [
  'better-sqlite3',
  'pg',
  'pg-native',
  'bufferutil',
  'utf-8-validate',
  'node-pty',
  '@node-rs/*',
  'pino',
  'pino-pretty',
  'thread-stream',
  'vite',
  'lightningcss',
  'esbuild',
  'typescript',
  'playwright-core',
  'tsx',
];

rmSync(outdir, { recursive: true, force: true });
const result = await build({
  entryPoints: { main: join(root, 'dist', 'cli', 'main.js') },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: EXTERNAL,
  // Packages written as CommonJS call require() for Node's built-ins; an ES module has none of its own.
  banner: {
    js: "import { createRequire as __mycRequire } from 'node:module'; const require = __mycRequire(import.meta.url);",
  },
  sourcemap: true,
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
});
const bytes = Object.values(result.metafile.outputs).reduce((sum, o) => sum + o.bytes, 0);
const files = Object.keys(result.metafile.outputs).filter((f) => f.endsWith('.js')).length;
console.log(`bundle: ${files} files, ${(bytes / 1024 / 1024).toFixed(1)} MiB (with source maps) in dist/bundle/`);
