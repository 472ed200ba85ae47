// The console panel's logic without a browser: ANSI runs, the agent's capability as the page reads it (with a
// hostile device's values), parameter checks, and the client's routing of frames by id and sequence number.
// The DOM side (output as text, the panel, the terminal) is tested in Chromium: dashboard-console.test.ts.
import { describe, expect, it } from 'vitest';
import type { Json } from '../services/protocol/messages.ts';
import { AnsiParser, MAX_ESCAPE_LENGTH, type Run } from '../dashboard/src/console-ansi.ts';
import {
  checkParams,
  MAX_COMMANDS,
  MAX_PARAM_VALUE_LENGTH,
  parseCapability,
} from '../dashboard/src/console-capability.ts';
import {
  ConsoleClient,
  type ConsoleRequestFrame,
  type ExecExitFrame,
  type ExecOutputFrame,
  isConsoleFrame,
  MAX_REORDER,
  PTY_INPUT_CHUNK,
  PTY_INPUT_FRAMES_PER_SECOND,
  PTY_INPUT_QUEUE,
} from '../dashboard/src/console-client.ts';
import { waitFor } from './helpers/wait.ts';

const text = (runs: Run[]) => runs.map((r) => r.text).join('');

describe('ANSI runs', () => {
  it('keeps markup as plain text and colours as classes', () => {
    const p = new AnsiParser();
    const runs = p.push('\u001b[31m<script>alert(1)</script>\u001b[0m done\n');
    expect(runs).toEqual([
      { text: '<script>alert(1)</script>', cls: 'ansi-fg-1' },
      { text: ' done\n', cls: '' },
    ]);
  });

  it('combines attributes, bright colours, backgrounds and resets', () => {
    const p = new AnsiParser();
    expect(p.push('\u001b[1;4;93;44mA\u001b[22;24mB\u001b[39;49mC\u001b[mD')).toEqual([
      { text: 'A', cls: 'ansi-fg-11 ansi-bg-4 ansi-bold ansi-underline' },
      { text: 'B', cls: 'ansi-fg-11 ansi-bg-4' },
      { text: 'CD', cls: '' }, // same classes: one run
    ]);
  });

  it('maps 256-colour codes below 16 to classes, the rest of the palette and true colour to rgb()', () => {
    const p = new AnsiParser();
    expect(
      p.push('\u001b[38;5;2mg\u001b[38;5;200mx\u001b[38;2;1;2;3my\u001b[48;5;16;38;5;244mw\u001b[1mz\u001b[0m.'),
    ).toEqual([
      { text: 'g', cls: 'ansi-fg-2' },
      // 200 = 16 + 36*5 + 6*0 + 4: the cube's (5, 0, 4), xterm's #ff00d7.
      { text: 'x', cls: '', fg: 'rgb(255, 0, 215)' },
      { text: 'y', cls: '', fg: 'rgb(1, 2, 3)' },
      // 16 is the cube's black; 244 the 13th grey (8 + 12 * 10).
      { text: 'w', cls: '', fg: 'rgb(128, 128, 128)', bg: 'rgb(0, 0, 0)' },
      { text: 'z', cls: 'ansi-bold', fg: 'rgb(128, 128, 128)', bg: 'rgb(0, 0, 0)' },
      { text: '.', cls: '' },
    ]);
    // The same colour across chunks is one run per chunk with the same value; a reset ends it.
    const q = new AnsiParser();
    expect(q.push('\u001b[38;2;10;20;30ma')).toEqual([{ text: 'a', cls: '', fg: 'rgb(10, 20, 30)' }]);
    expect(q.push('b\u001b[39mc')).toEqual([
      { text: 'b', cls: '', fg: 'rgb(10, 20, 30)' },
      { text: 'c', cls: '' },
    ]);
  });

  it('leaves a colour out of range (or malformed) unset: only numbers 0-255 ever reach a CSS value', () => {
    const p = new AnsiParser();
    expect(
      p.push('\u001b[38;5;256ma\u001b[38;2;300;0;0mb\u001b[38;2;1;2mc\u001b[48;5mx\u001b[38;5;1;48;2;999;0;0md'),
    ).toEqual([
      { text: 'abcx', cls: '' },
      { text: 'd', cls: 'ansi-fg-1' },
    ]);
  });

  it('drops cursor moves, erases, titles, hyperlinks, bells and control characters', () => {
    const p = new AnsiParser();
    const runs = p.push(
      'a\u001b[2K\u001b[1;1Hb\u001b]0;title\u0007c\u001b]8;;http://x\u001b\\d\u0007e\u0000f\r\ng\u001bch\u0008\u007f\u009bi',
    );
    expect(text(runs)).toBe('abcdef\nghi');
  });

  it('carries an escape sequence split across chunks, and the style', () => {
    const p = new AnsiParser();
    expect(p.push('x\u001b[3')).toEqual([{ text: 'x', cls: '' }]);
    expect(p.push('2my')).toEqual([{ text: 'y', cls: 'ansi-fg-2' }]);
    expect(p.push('z\u001b')).toEqual([{ text: 'z', cls: 'ansi-fg-2' }]);
    expect(p.push('[0mw')).toEqual([{ text: 'w', cls: '' }]);
  });

  it('gives up on an escape sequence longer than the cap instead of buffering forever', () => {
    const p = new AnsiParser();
    const long = `\u001b[${'1;'.repeat(MAX_ESCAPE_LENGTH)}`;
    expect(text(p.push(long))).not.toContain('\u001b');
    expect(text(p.push('after'))).toBe('after');
    // An unterminated OSC (a title that never ends) is dropped too, and the text after it still shows.
    const q = new AnsiParser();
    expect(text(q.push(`\u001b]0;${'t'.repeat(MAX_ESCAPE_LENGTH * 2)}`))).not.toContain('\u001b');
    expect(text(q.push('visible'))).toContain('visible');
  });
});

describe('the agent capability', () => {
  const cap = {
    commands: {
      ping: { params: { host: '^[a-z0-9.-]+$' }, description: 'ping a host' },
      uptime: { params: {} },
    },
    shell: true,
    pty: false,
  };

  it('reads the JSON text an agent advertises, or the object', () => {
    for (const value of [JSON.stringify(cap), cap]) {
      const c = parseCapability(value);
      expect(c?.shell).toBe(true);
      expect(c?.pty).toBe(false);
      expect(c?.commands.map((x) => x.name)).toEqual(['ping', 'uptime']);
      expect(c?.commands[0].params[0].name).toBe('host');
      expect(c?.commands[0].description).toBe('ping a host');
    }
  });

  it('is undefined for values that are not a capability', () => {
    for (const v of [undefined, null, 3, 'nope', '[1,2]', '{"commands":', '[]'])
      expect(parseCapability(v)).toBeUndefined();
    // Flags are true only when they are exactly true.
    expect(parseCapability({ commands: {}, shell: 'yes', pty: 1 })).toEqual({ commands: [], shell: false, pty: false });
  });

  it('skips hostile entries and keeps the rest', () => {
    const hostile = JSON.parse(
      `{"commands":{"__proto__":{"params":{}},"constructor":{"params":{}},"ok":{"params":{"__proto__":"x"}},` +
        `"bad name":{"params":{}},"${'n'.repeat(65)}":{"params":{}},"long":{"params":{"p":"${'a'.repeat(600)}"}},` +
        `"good":{"params":{"p":"^a$"}}},"shell":false,"pty":true}`,
    );
    const c = parseCapability(hostile);
    expect(c?.commands.map((x) => x.name)).toEqual(['constructor', 'good']);
    expect(({} as Record<string, unknown>).params).toBeUndefined();
  });

  it('caps the number of commands and parameters', () => {
    const many: Record<string, Json> = {};
    for (let i = 0; i < MAX_COMMANDS + 50; i++) many[`c${i}`] = { params: {} };
    many.wide = { params: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`p${i}`, '.*'])) };
    const c = parseCapability({ commands: many, shell: false, pty: false });
    expect(c?.commands.length).toBe(MAX_COMMANDS);
    expect(c?.commands.some((x) => x.name === 'wide')).toBe(false);
  });

  it('refuses a JSON text nested deeper than the parser cap', () => {
    expect(parseCapability(`${'['.repeat(100)}${']'.repeat(100)}`)).toBeUndefined();
  });
});

describe('parameter checks', () => {
  const c = parseCapability({
    commands: { ping: { params: { host: '^[a-z0-9.-]+$', count: '^[0-9]{1,2}$' } }, broken: { params: { p: '(' } } },
    shell: false,
    pty: false,
  });
  const ping = c?.commands.find((x) => x.name === 'ping');
  const broken = c?.commands.find((x) => x.name === 'broken');
  if (ping === undefined || broken === undefined) throw new Error('capability not read');

  it('matches the whole value, as the agent does (the pattern is anchored for it)', () => {
    const loose = parseCapability({ commands: { c: { params: { n: '[0-9]+' } } }, shell: false, pty: false })
      ?.commands[0];
    if (loose === undefined) throw new Error('no command');
    expect(checkParams(loose, { n: '42' }).ok).toBe(true);
    expect(checkParams(loose, { n: '42; reboot' }).ok).toBe(false);
  });

  it('passes values that match their patterns', () => {
    expect(checkParams(ping, { host: 'example.org', count: '3' })).toEqual({
      ok: true,
      params: { host: 'example.org', count: '3' },
    });
  });

  it('names every parameter that fails, and why', () => {
    const r = checkParams(ping, { host: 'example.org; rm -rf /', count: '' });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.get('host')).toBe('must match ^[a-z0-9.-]+$');
    expect(r.errors.get('count')).toBe('must match ^[0-9]{1,2}$');
  });

  it('refuses control characters, over-long values, missing values and unreadable patterns', () => {
    const loose = parseCapability({ commands: { echo: { params: { t: '.*' } } }, shell: false, pty: false })
      ?.commands[0];
    if (loose === undefined) throw new Error('no command');
    const nl = checkParams(loose, { t: 'a\nb' });
    expect(!nl.ok && nl.errors.get('t')).toBe('control characters are not allowed');
    const long = checkParams(loose, { t: 'a'.repeat(MAX_PARAM_VALUE_LENGTH + 1) });
    expect(!long.ok && long.errors.get('t')).toMatch(/longer than/);
    const missing = checkParams(ping, { count: '1' });
    expect(!missing.ok && missing.errors.has('host')).toBe(true);
    const b = checkParams(broken, { p: 'x' });
    expect(!b.ok && b.errors.get('p')).toMatch(/cannot read/);
    // A value named like a prototype key is just a missing value, never a lookup on Object.prototype.
    const proto = checkParams(ping, JSON.parse('{"__proto__":{"host":"x"},"count":"1"}'));
    expect(!proto.ok && proto.errors.has('host')).toBe(true);
  });
});

describe('the console client', () => {
  function harness(connected = true) {
    const sent: ConsoleRequestFrame[] = [];
    const client = new ConsoleClient((f) => {
      if (connected) sent.push(f);
      return connected;
    });
    const out: string[] = [];
    const exits: ExecExitFrame[] = [];
    const listener = { output: (f: ExecOutputFrame) => out.push(f.data), exit: (f: ExecExitFrame) => exits.push(f) };
    return { sent, client, out, exits, listener };
  }
  const output = (id: string, seq: number, data = `${seq}`): ExecOutputFrame => ({
    type: 'exec-output',
    id,
    seq,
    stream: 'stdout',
    data,
  });
  const exit = (id: string, status = 'ok'): ExecExitFrame => ({
    type: 'exec-exit',
    id,
    status,
    code: 0,
    signal: null,
    truncated: false,
    durationMs: 1,
    bytes: 1,
  });

  it('sends exec with a fresh identifier-shaped id and routes its frames in sequence order', () => {
    const { sent, client, out, exits, listener } = harness();
    const id = client.exec({ uid: 'agent-1', command: 'ping', params: { host: 'a' }, mode: 'output' }, listener);
    const id2 = client.exec({ uid: 'agent-1', shell: 'ls', mode: 'output' }, listener);
    expect(id).toMatch(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/);
    expect(id2).not.toBe(id);
    expect(sent[0]).toEqual({
      type: 'exec',
      id,
      uid: 'agent-1',
      command: 'ping',
      params: { host: 'a' },
      mode: 'output',
    });
    if (id === undefined) return;
    client.frame(output(id, 1));
    client.frame(output(id, 0));
    client.frame(output(id, 0)); // duplicate
    client.frame(output(id, 3));
    client.frame(output(id, 2));
    expect(out).toEqual(['0', '1', '2', '3']);
    client.frame(output(id, 5)); // 4 never comes: flushed at the exit
    client.frame(exit(id));
    expect(out).toEqual(['0', '1', '2', '3', '5']);
    expect(exits.map((e) => e.status)).toEqual(['ok']);
    // After the exit the id is forgotten: late or foreign frames go nowhere.
    client.frame(output(id, 6));
    client.frame(exit(id));
    client.frame(output('someone-else', 0));
    expect(out.length).toBe(5);
    expect(exits.length).toBe(1);
    expect(client.cancel(id)).toBe(false);
  });

  it('gives up a gap after MAX_REORDER held frames', () => {
    const { client, out, listener } = harness();
    const id = client.exec({ uid: 'a', command: 'x', mode: 'output' }, listener) ?? '';
    for (let s = 1; s <= MAX_REORDER + 1; s++) client.frame(output(id, s));
    expect(out.length).toBe(MAX_REORDER + 1);
    expect(out[0]).toBe('1');
  });

  it('cancels, and ends every request when the connection drops', () => {
    const { sent, client, exits, listener } = harness();
    const id = client.exec({ uid: 'a', command: 'x', mode: 'output' }, listener) ?? '';
    expect(client.cancel(id)).toBe(true);
    expect(sent[1]).toEqual({ type: 'exec-cancel', id });
    client.disconnected();
    expect(exits).toEqual([{ type: 'exec-exit', id, status: 'error', reason: 'connection to the broker lost' }]);
    expect(client.isRunning(id)).toBe(false);
  });

  it('answers undefined when not connected, and keeps nothing', () => {
    const { client, listener } = harness(false);
    expect(client.exec({ uid: 'a', command: 'x', mode: 'output' }, listener)).toBeUndefined();
    expect(client.ptyOpen('a', 80, 24, listener)).toBeUndefined();
  });

  it('opens a PTY, splits a long paste and paces it, resizes, and closes with exec-cancel', async () => {
    const { sent, client, out, listener } = harness();
    const id = client.ptyOpen('agent-1', 80, 24, listener) ?? '';
    expect(sent[0]).toEqual({ type: 'pty-open', id, uid: 'agent-1', cols: 80, rows: 24 });
    const started = Date.now();
    expect(client.ptyInput(id, 'x'.repeat(PTY_INPUT_CHUNK * 2 + 1))).toBe(0);
    // The first piece goes at once, the others in their slots (50 frames a second at most).
    expect(sent.filter((f) => f.type === 'pty-input').length).toBe(1);
    await waitFor(() => sent.filter((f) => f.type === 'pty-input').length === 3, 'the paced pieces');
    expect(Date.now() - started).toBeGreaterThanOrEqual((2 * 1000) / PTY_INPUT_FRAMES_PER_SECOND - 5);
    const inputs = sent.filter((f) => f.type === 'pty-input');
    expect(inputs.map((f) => (f.type === 'pty-input' ? f.data.length : 0))).toEqual([
      PTY_INPUT_CHUNK,
      PTY_INPUT_CHUNK,
      1,
    ]);
    client.ptyResize(id, 120, 40);
    expect(sent.at(-1)).toEqual({ type: 'pty-resize', id, cols: 120, rows: 40 });
    client.frame({ type: 'exec-output', id, seq: 0, stream: 'pty', data: '$ ' });
    expect(out).toEqual(['$ ']);
    client.cancel(id);
    expect(sent.at(-1)).toEqual({ type: 'exec-cancel', id });
    // Input to an unknown PTY is not sent.
    const before = sent.length;
    client.ptyInput('nope', 'x');
    client.ptyResize('nope', 1, 1);
    expect(sent.length).toBe(before);
  });

  it('drops a paste beyond the input queue and says how much', () => {
    const { client, listener } = harness();
    const id = client.ptyOpen('agent-1', 80, 24, listener) ?? '';
    const extra = 10;
    const dropped = client.ptyInput(id, 'y'.repeat(PTY_INPUT_CHUNK * PTY_INPUT_QUEUE + extra));
    expect(dropped).toBe(extra);
    client.disconnected(); // ends the PTY: the queued pieces are never sent
  });

  it('recognises the console frames', () => {
    expect(isConsoleFrame({ type: 'exec-output' })).toBe(true);
    expect(isConsoleFrame({ type: 'exec-exit' })).toBe(true);
    expect(isConsoleFrame({ type: 'update' })).toBe(false);
  });
});
