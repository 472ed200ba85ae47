// The agent's PTY wrapper against a real shell on a real pseudo-terminal (node-pty). Skipped, loudly, only where
// node-pty did not build (it is an optional dependency); on the CI machine it builds.
import { describe, expect, it } from 'vitest';
import { openPty, PTY_COALESCE_CHARS, type PtyExit, ptyAvailable, shellEnv } from '../services/agent/pty.ts';
import { waitFor } from './helpers/wait.ts';

const WAIT_MS = 10_000;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!ptyAvailable())('agent pty (node-pty)', () => {
  it('runs sh: echoes what is typed, resizes, and ends on kill', async () => {
    const pty = openPty({
      shell: '/bin/sh',
      cols: 80,
      rows: 24,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PS1: '$ ' },
    });
    expect(pty).not.toBeNull();
    if (pty === null) return;
    let out = '';
    let exit: PtyExit | undefined;
    pty.onData((d) => {
      out += d;
    });
    pty.onExit((e) => {
      exit = e;
    });

    // The shell's own output, computed so that the terminal's echo of what was typed cannot match it (the echo
    // may come before the prompt, whenever the shell starts reading).
    pty.write('echo hi-$((6*7))\r');
    await waitFor(() => out.includes('hi-42'), 'hi-42 from the shell', WAIT_MS);

    // The terminal's size reaches the program on it (stty asks the kernel).
    pty.resize(120, 40);
    out = '';
    pty.write('stty size\r');
    await waitFor(() => out.includes('40 120'), 'stty size 40 120', WAIT_MS);

    // Out-of-range sizes are clamped instead of reaching the kernel.
    pty.resize(0, 100_000);
    out = '';
    pty.write('stty size\r');
    await waitFor(() => out.includes('500 1'), 'stty size clamped to 500 1', WAIT_MS);

    const pid = pty.pid;
    pty.kill();
    const e = await waitFor(() => exit, 'the shell exits', WAIT_MS);
    expect(e.signal === 'SIGHUP' || e.code !== null).toBe(true);
    await waitFor(() => !isAlive(pid), 'the shell process is gone', WAIT_MS);
    // After the exit, writes, resizes and a second kill are harmless.
    pty.write('echo late\r');
    pty.resize(80, 24);
    pty.kill();
  });

  it('gathers a burst of output into few chunks', async () => {
    const pty = openPty({ shell: '/bin/sh', cols: 80, rows: 24 });
    if (pty === null) throw new Error('openPty failed');
    const chunks: string[] = [];
    let exited = false;
    pty.onData((d) => {
      chunks.push(d);
    });
    pty.onExit(() => {
      exited = true;
    });
    // 2,000 short lines: node-pty reads them in many pieces; the wrapper hands on far fewer.
    pty.write('i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; echo done-$((6*7))\r');
    await waitFor(() => chunks.join('').includes('done-42'), 'the last line', WAIT_MS);
    pty.write('exit 0\r');
    await waitFor(() => exited, 'the shell exits', WAIT_MS);
    const all = chunks.join('');
    expect(all).toContain('line1999');
    expect(all).toContain('done-42');
    expect(chunks.every((c) => c.length <= PTY_COALESCE_CHARS + 4096)).toBe(true);
    expect(chunks.length).toBeLessThan(200);
  });

  it("keeps the agent's MYCELIUM_* settings (its token) out of the shell's environment", async () => {
    process.env.MYCELIUM_TOKEN = 'secret-node-token';
    let pty: ReturnType<typeof openPty>;
    try {
      pty = openPty({ shell: '/bin/sh', cols: 80, rows: 24 });
    } finally {
      delete process.env.MYCELIUM_TOKEN;
    }
    if (pty === null) throw new Error('openPty failed');
    let out = '';
    let exited = false;
    pty.onData((d) => {
      out += d;
    });
    pty.onExit(() => {
      exited = true;
    });
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    pty.write('echo "[$TERM][${MYCELIUM_TOKEN:-none}]"\r');
    // The expanded line: the echo of what was typed still has `[$TERM]` in it.
    const line = await waitFor(() => /\[(xterm[^\]]*)\]\[([^\]]*)\]/.exec(out), 'the expanded line', WAIT_MS);
    expect([line[1], line[2]]).toEqual(['xterm-256color', 'none']);
    pty.write('exit 0\r');
    await waitFor(() => exited, 'the shell exits', WAIT_MS);
    expect(shellEnv({ MYCELIUM_TOKEN: 't', PATH: '/bin', MYCELIUM_KEY_FILE: 'k' })).toEqual({
      PATH: '/bin',
      TERM: 'xterm-256color',
    });
  });

  it('reports the exit code of a shell that exits by itself', async () => {
    const pty = openPty({ shell: '/bin/sh', cols: 40, rows: 10 });
    if (pty === null) throw new Error('openPty failed');
    let exit: PtyExit | undefined;
    pty.onExit((e) => {
      exit = e;
    });
    pty.write('exit 3\r');
    const e = await waitFor(() => exit, 'the shell exits', WAIT_MS);
    expect(e).toEqual({ code: 3, signal: null });
  });
});

it('ptyAvailable says whether node-pty loaded', () => {
  // Documented for the report: on this machine node-pty is built, so the suite above ran.
  expect(typeof ptyAvailable()).toBe('boolean');
});
