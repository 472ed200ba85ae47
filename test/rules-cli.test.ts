// The command line as an operator runs it: `mycelium rules check DIR` (type errors and invalid rules fail it,
// exit 1) and `mycelium up --rules-dir DIR` (the rules service in the one process, its REST routes answering).
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/rules.ts';
import { cliToken, startUp } from './helpers/up-process.ts';
import { waitFor } from './helpers/wait.ts';

const BIN = fileURLToPath(new URL('../bin/mycelium.js', import.meta.url));
const RULE_API = JSON.stringify(join(process.cwd(), 'services/rules/rule.ts'));
/** The TypeScript compiler checking a folder from the sources on a loaded machine. */
const CHECK_TIMEOUT_MS = 90_000;

const cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function check(dir: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'rules', 'check', dir], { timeout: CHECK_TIMEOUT_MS }, (err, stdout) => {
      resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? -1), stdout });
    });
  });
}

describe('mycelium rules check', () => {
  it(
    'passes the examples',
    async () => {
      const r = await check(join(process.cwd(), 'rules/examples'));
      expect(r.stdout).toContain('4 of 4 rule files pass');
      expect(r.code).toBe(0);
    },
    CHECK_TIMEOUT_MS,
  );

  it(
    'fails a type error, an invalid trigger, a bad schedule and a duplicate name, naming each',
    async () => {
      const dir = tempDir(cleanup);
      writeFileSync(
        join(dir, 'good.ts'),
        `import { rule } from ${RULE_API};\nexport default rule({ name: 'good', on: { new: { node: '*' } }, async run(e, ctx) { ctx.log.info(e.type); } });\n`,
      );
      writeFileSync(
        join(dir, 'typo.ts'),
        `import { rule } from ${RULE_API};\nexport default rule({ name: 'typo', on: { new: { node: '*' } }, async run(e, ctx) { await ctx.wrte('x', 'led', 1); } });\n`,
      );
      writeFileSync(
        join(dir, 'trigger.js'),
        `export default { name: 'trigger', on: { updat: { node: '*' } }, run() {} };\n`,
      );
      writeFileSync(
        join(dir, 'cron.js'),
        `export default { name: 'cron', on: { schedule: { cron: '61 * * * *' } }, run() {} };\n`,
      );
      writeFileSync(join(dir, 'z-dupe.js'), `export default { name: 'good', on: { new: { node: '*' } }, run() {} };\n`);
      const r = await check(dir);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('ok    good.ts');
      expect(r.stdout).toMatch(/FAIL {2}typo\.ts: type error at 2:\d+: Property 'wrte' does not exist/);
      expect(r.stdout).toMatch(/FAIL {2}trigger\.js: is not a valid rule: on/);
      expect(r.stdout).toContain('FAIL  cron.js: has a bad schedule: cron minute: 61 is outside 0-59');
      expect(r.stdout).toContain('FAIL  z-dupe.js: the name good is already used by good.ts');
      expect(r.stdout).toContain('1 of 5 rule files pass');
    },
    CHECK_TIMEOUT_MS,
  );
});

describe('mycelium up --rules-dir', () => {
  it('runs the rules service beside the broker; its rules are listed by the REST API', async () => {
    const dir = tempDir(cleanup);
    writeFileSync(join(dir, 'hi.js'), `export default { name: 'hi', on: { new: { node: '*' } }, run() {} };\n`);
    const up = await startUp({ args: ['--services', 'broker', '--rules-dir', dir] });
    cleanup(() => up.kill());
    const token = await cliToken(up, 'viewer', 'me');
    const rules = await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${up.ports.broker}/api/v1/rules`, {
          headers: { authorization: `Bearer ${token}` },
        });
        return res.status === 200 ? ((await res.json()) as Array<{ name: string; status: string }>) : undefined;
      },
      'GET /api/v1/rules',
      20_000,
    );
    expect(rules).toEqual([expect.objectContaining({ name: 'hi', status: 'running' })]);
  }, 60_000);
});
