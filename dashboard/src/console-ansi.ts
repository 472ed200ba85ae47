// ANSI colour codes in a command's output, turned into runs of text with CSS classes. The panel sets each run's
// text with textContent, so output can style itself (SGR colours, bold, underline) but never become markup.
// Everything else a terminal would act on (cursor moves, erase, titles, OSC hyperlinks, bells, lone control
// characters) is dropped: the output panel is a log, not a terminal (the PTY view is the terminal).
// Streaming: a chunk may end inside an escape sequence, so the parser keeps the unfinished sequence (bounded) and
// the current style between chunks (ECMA-48 section 8.3.117 for SGR).

export interface Run {
  text: string;
  /** Space-separated class names (`ansi-fg-1 ansi-bold`), or '' for plain text. */
  cls: string;
}

/** An escape sequence longer than this is not one a program meant: dropped, and parsing goes on. */
export const MAX_ESCAPE_LENGTH = 256;

interface Style {
  fg?: number;
  bg?: number;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
}

const plain = (): Style => ({ bold: false, dim: false, italic: false, underline: false, inverse: false });

function classOf(s: Style): string {
  const out: string[] = [];
  if (s.fg !== undefined) out.push(`ansi-fg-${s.fg}`);
  if (s.bg !== undefined) out.push(`ansi-bg-${s.bg}`);
  if (s.bold) out.push('ansi-bold');
  if (s.dim) out.push('ansi-dim');
  if (s.italic) out.push('ansi-italic');
  if (s.underline) out.push('ansi-underline');
  if (s.inverse) out.push('ansi-inverse');
  return out.join(' ');
}

/** Applies one SGR parameter list (`1;31`, `38;5;200`, '' = reset) to the style. */
function applySgr(style: Style, params: string): Style {
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  const s = { ...style };
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(s, plain(), { fg: undefined, bg: undefined });
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 7) s.inverse = true;
    else if (c === 22) s.bold = s.dim = false;
    else if (c === 23) s.italic = false;
    else if (c === 24) s.underline = false;
    else if (c === 27) s.inverse = false;
    else if (c >= 30 && c <= 37) s.fg = c - 30;
    else if (c === 39) s.fg = undefined;
    else if (c >= 40 && c <= 47) s.bg = c - 40;
    else if (c === 49) s.bg = undefined;
    else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
    else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
    else if (c === 38 || c === 48) {
      // 256-colour (5;n) and true-colour (2;r;g;b): the 16 base colours map to classes; the rest stay plain,
      // because a colour outside the palette would need an inline style, which the page's CSP forbids.
      const kind = codes[i + 1];
      const n = kind === 5 ? codes[i + 2] : undefined;
      const colour = n !== undefined && n >= 0 && n < 16 ? n : undefined;
      if (c === 38) s.fg = colour;
      else s.bg = colour;
      i += kind === 5 ? 2 : kind === 2 ? 4 : 1;
    }
  }
  return s;
}

/** Control characters other than newline and tab: a log shows none of them. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** Select Graphic Rendition: ESC [ params m. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: ESC starts the sequence
const SGR = /^\u001b\[([0-9;:]*)m$/;

export class AnsiParser {
  private style: Style = plain();
  private pending = '';

  /** Parses one chunk of output; runs with the same classes next to each other are merged. */
  push(chunk: string): Run[] {
    const text = this.pending + chunk;
    this.pending = '';
    const runs: Run[] = [];
    let cls = classOf(this.style);
    let buf = '';
    const flush = () => {
      const clean = buf.replace(/\r\n/g, '\n').replace(CONTROL, '');
      buf = '';
      if (clean === '') return;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.cls === cls) last.text += clean;
      else runs.push({ text: clean, cls });
    };
    let i = 0;
    while (i < text.length) {
      const esc = text.indexOf('\u001b', i);
      if (esc < 0) {
        buf += text.slice(i);
        break;
      }
      buf += text.slice(i, esc);
      const end = this.sequenceEnd(text, esc);
      if (end === undefined) {
        // Unfinished at the end of the chunk: keep it for the next one, unless it is already too long to be real.
        const rest = text.slice(esc);
        if (rest.length <= MAX_ESCAPE_LENGTH) this.pending = rest;
        break;
      }
      const seq = text.slice(esc, end);
      const sgr = SGR.exec(seq);
      if (sgr) {
        flush();
        this.style = applySgr(this.style, sgr[1]);
        cls = classOf(this.style);
      }
      i = end;
    }
    flush();
    return runs;
  }

  /** Index just past the escape sequence starting at `start`, or undefined when the text ends first. */
  private sequenceEnd(text: string, start: number): number | undefined {
    const next = text[start + 1];
    if (next === undefined) return undefined;
    const limit = Math.min(text.length, start + MAX_ESCAPE_LENGTH);
    if (next === '[') {
      // CSI: parameter and intermediate bytes, then one final byte in @..~ (ECMA-48 section 5.4).
      for (let j = start + 2; j < limit; j++) {
        const c = text.charCodeAt(j);
        if (c >= 0x40 && c <= 0x7e) return j + 1;
        if (c < 0x20 || c > 0x3f) return j; // not a CSI after all: drop what was read, keep this character
      }
      return limit === text.length ? undefined : limit;
    }
    if (next === ']' || next === 'P' || next === '_' || next === '^') {
      // OSC / DCS / APC / PM: a string ended by BEL or ST (ESC \).
      for (let j = start + 2; j < limit; j++) {
        if (text[j] === '\u0007') return j + 1;
        if (text[j] === '\u001b' && text[j + 1] === '\\') return j + 2;
      }
      return limit === text.length ? undefined : limit;
    }
    // A two-character escape (ESC c, ESC =, …).
    return start + 2;
  }
}
