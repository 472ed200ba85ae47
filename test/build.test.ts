// The compiled build as users run it: `npm run build` (run by `npm ci`) leaves tsc's output in dist/ and the bundle
// in dist/bundle/ (utils/build/bundle.mjs), and bin/mycelium.js runs the bundle. The other tests run the sources
// (vitest sets VITEST, which bin/mycelium.js honours); these clear it, so the bundle itself starts `up`, serves
// the page, answers REST and history (better-sqlite3 from node_modules), builds the OpenAPI document on demand,
// and reaches pg for a postgres:// history.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { terminate } from './helpers/child-process.ts';
import { makeKeys } from './helpers/keys.ts';
import { startNatsServer } from './helpers/nats-server.ts';
import { cliToken, startUp, type UpProcess } from './helpers/up-process.ts';
import { waitFor } from './helpers/wait.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = `${ROOT}bin/mycelium.js`;
const BUNDLE = `${ROOT}dist/bundle/main.js`;
/** Runs the build, not the sources. */
const BUILD_ENV = { VITEST: '', MYCELIUM_FROM_SOURCE: '' };

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, ...BUILD_ENV }, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number(err.code ?? 1), stdout, stderr }),
    );
  });
}

let up: UpProcess | undefined;
afterEach(async () => {
  await up?.kill();
  up = undefined;
});

describe('the compiled bundle', { timeout: 120_000 }, () => {
  it('exists after npm run build (npm ci runs it)', () => {
    expect(existsSync(BUNDLE), 'dist/bundle/main.js is missing: run `npm run build`').toBe(true);
  });

  it('runs `mycelium --help` and `up --demo`: page, REST, history and the OpenAPI document', async () => {
    const help = await run(['--help']);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: mycelium <command>/);

    up = await startUp({ args: ['--demo'], env: BUILD_ENV });
    const token = await cliToken(up, 'viewer', 'build-test');
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const base = `http://127.0.0.1:${up.ports.broker}/api/v1`;

    // The dashboard service found its built page from inside dist/bundle/.
    const page = await fetch(`http://127.0.0.1:${up.ports.dashboard}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<script type="module"');

    // A demo node's value through the gateways and the broker, then through the history (SQLite).
    await waitFor(
      async () => (await fetch(`${base}/nodes/demo-ws`, auth)).status === 200,
      'the demo node on the broker',
      30_000,
    );
    const points = await waitFor(
      async () => {
        const res = await fetch(`${base}/nodes/demo-ws/resources/temperature/history`, auth);
        const body = (await res.json()) as { points?: unknown[] };
        return res.status === 200 && (body.points?.length ?? 0) > 0 ? body.points : undefined;
      },
      'a stored temperature',
      30_000,
    );
    expect(points!.length).toBeGreaterThan(0);

    // @fastify/swagger is loaded on this first request, not at start.
    const doc = await fetch(`${base}/openapi.json`, auth);
    expect(doc.status).toBe(200);
    const openapi = (await doc.json()) as { openapi?: string; paths?: Record<string, unknown> };
    expect(openapi.openapi).toBe('3.0.3');
    expect(Object.keys(openapi.paths ?? {})).toContain('/api/v1/nodes/{uid}');
  });

  it('runs a broker on a real nats-server and serves /metrics (packages the bundle loads lazily)', async () => {
    // nats and prom-client are CommonJS packages loaded with import() at first use; in the bundle such a package
    // has only a default export (services/common/cjs.ts). A broker that cannot reach NATS never listens.
    const nats = await startNatsServer({ jetstream: true });
    const keys = makeKeys();
    const args = ['broker', '--port', '0', '--host', '127.0.0.1', '--nats-url', nats.url, '--key-file', keys.keyFile];
    const child = spawn(process.execPath, [BIN, ...args, '--public-metrics'], {
      env: { ...process.env, ...BUILD_ENV },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    try {
      const port = await waitFor(
        () => {
          if (child.exitCode !== null) throw new Error(`the broker exited: ${out}`);
          return /"port":(\d+).*"msg":"broker listening"/.exec(out)?.[1];
        },
        'the bundled broker listening on NATS',
        30_000,
      );
      const health = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { bus?: string };
      expect(health.bus).toBe('nats');
      const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toMatch(/^mycelium_process_cpu_seconds_total /m);
    } finally {
      await terminate(child, 5_000);
      await nats.stop();
    }
  });

  it('loads the PostgreSQL store from the bundle: a refused connection, not a missing module', async () => {
    const out = await run(['history', '--db', 'postgres://127.0.0.1:1/none', '--http-port=-1']);
    expect(out.code).not.toBe(0);
    expect(out.stdout + out.stderr).not.toMatch(/cannot be loaded|Cannot find (module|package)/);
    expect(out.stdout + out.stderr).toMatch(/ECONNREFUSED|connect/i);
  });
});
