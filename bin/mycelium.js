#!/usr/bin/env node
// Entry point of the `mycelium` command. It runs the compiled build (dist/, made by `npm run build`, which
// `npm ci` runs through `prepare`: the bundle dist/bundle/main.js, else tsc's dist/cli/main.js) when there is
// one, and otherwise the TypeScript sources through tsx's
// loader, so a clone without a build still works. Tests run the sources (vitest sets VITEST, which child
// processes inherit), as does anyone who sets MYCELIUM_FROM_SOURCE=1 while editing without rebuilding.
// The ws gateway's --workers forks re-run this file, so they run whatever their primary runs.
import { existsSync } from 'node:fs';

const bundled = new URL('../dist/bundle/main.js', import.meta.url);
const compiled = new URL('../dist/cli/main.js', import.meta.url);
const fromSource = Boolean(process.env.MYCELIUM_FROM_SOURCE || process.env.VITEST);

if (!fromSource && existsSync(bundled)) {
  await import(bundled.href);
} else if (!fromSource && existsSync(compiled)) {
  await import(compiled.href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write(
      'mycelium: no compiled build (dist/) and no tsx to run the sources: run `npm ci` or `npm run build`\n',
    );
    process.exit(1);
  }
  register();
  await import('../cli/main.ts');
}
