// `mycelium up --demo` runs the history service beside the broker on the in-process bus: the demo node's values
// reach the REST history, and `mycelium history export` reads them from the database beside the keys.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { cliToken, startUp, type UpProcess } from './helpers/up-process.ts';
import { waitFor } from './helpers/wait.ts';

const BIN = fileURLToPath(new URL('../bin/mycelium.js', import.meta.url));
/** The demo node sends its temperature at start and every 5 s; allow for a loaded machine. */
const FIRST_VALUE_TIMEOUT_MS = 20_000;
/** up's start (up to 30 s under load), two token and export processes, and the first value. */
const TEST_TIMEOUT_MS = 120_000;

let up: UpProcess | undefined;
afterEach(async () => {
  await up?.kill();
  up = undefined;
});

function exportCsv(home: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, 'history', 'export', ...args],
      { env: { ...process.env, MYCELIUM_HOME: home }, timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number(err.code ?? 1), stdout, stderr }),
    );
  });
}

describe('mycelium up: history', () => {
  it(
    'stores the demo node values, answers them over REST, and exports them as CSV',
    async () => {
      up = await startUp({ args: ['--demo'] });
      const token = await cliToken(up, 'viewer', 'history-test');
      const url = `http://127.0.0.1:${up.ports.broker}/api/v1/nodes/demo-ws/resources/temperature/history`;
      const points = await waitFor(
        async () => {
          const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
          const body = (await res.json()) as { points?: [number, unknown][] };
          return res.status === 200 && (body.points?.length ?? 0) > 0 ? body.points : undefined;
        },
        'a stored temperature',
        FIRST_VALUE_TIMEOUT_MS,
      );
      expect(points[0][1]).not.toBeNull();

      const db = `sqlite:${join(up.home, 'history.db')}`;
      const out = await exportCsv(up.home, ['--db', db, '--node', 'demo-ws', '--resource', 'temperature']);
      expect(out.code, out.stderr).toBe(0);
      const lines = out.stdout.trimEnd().split('\n');
      expect(lines[0]).toBe('time,value');
      expect(lines.length).toBeGreaterThan(1);
      expect(lines[1]).toMatch(/^\d{4}-\d{2}-\d{2}T[\d:.]+Z,./);

      const bad = await exportCsv(up.home, ['--node', 'demo-ws', '--resource', 'temperature', '--from', 'yesterday']);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/from must be/);
    },
    TEST_TIMEOUT_MS,
  );
});
