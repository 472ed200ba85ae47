// ANSI colour codes in a command's output, turned into runs of text with CSS classes (the 16 base colours and the
// attributes) and, for 256-colour and true-colour codes, an `rgb()` value the panel sets through CSSOM. The panel
// sets each run's text with textContent, so output can style itself (SGR colours, bold, underline) but never
// become markup.
// Everything else a terminal would act on (cursor moves, erase, titles, OSC hyperlinks, bells, lone control
// characters) is dropped: the output panel is a log, not a terminal (the PTY view is the terminal).
// Streaming: a chunk may end inside an escape sequence, so the parser keeps the unfinished sequence (bounded) and
// the current style between chunks (ECMA-48 section 8.3.117 for SGR).

export interface Run {
  text: string;
  /** Space-separated class names (`ansi-fg-1 ansi-bold`), or '' for plain text. */
  cls: string;
  /**
   * A colour outside the 16 classes (the 256-colour palette's 16-255, or true colour) as `rgb(r, g, b)` built
   * from numbers here: the page sets it through CSSOM (`span.style.color`), which the CSP allows, unlike a style
   * attribute. Absent when the class carries the colour.
   */
  fg?: string;
  bg?: string;
}

/** An escape sequence longer than this is not one a program meant: dropped, and parsing goes on. */
export const MAX_ESCAPE_LENGTH = 256;

/** A palette index (0-15 as a class, 16-255 computed) or a true colour. */
type Colour = number | { r: number; g: number; b: number };

interface Style {
  fg?: Colour;
  bg?: Colour;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
}

const plain = (): Style => ({ bold: false, dim: false, italic: false, underline: false, inverse: false });

const isClass = (c: Colour | undefined): c is number => typeof c === 'number' && c < 16;

/** xterm's 256-colour palette beyond the 16 base colours: a 6×6×6 cube (16-231), then 24 greys (232-255). */
export function paletteRgb(n: number): { r: number; g: number; b: number } {
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return { r: v, g: v, b: v };
  }
  const i = n - 16;
  const level = (k: number) => (k === 0 ? 0 : 55 + k * 40);
  return { r: level(Math.floor(i / 36)), g: level(Math.floor(i / 6) % 6), b: level(i % 6) };
}

/** The CSS value of a colour no class carries. */
function cssOf(c: Colour | undefined): string | undefined {
  if (c === undefined || isClass(c)) return undefined;
  const { r, g, b } = typeof c === 'number' ? paletteRgb(c) : c;
  return `rgb(${r}, ${g}, ${b})`;
}

function classOf(s: Style): string {
  const out: string[] = [];
  if (isClass(s.fg)) out.push(`ansi-fg-${s.fg}`);
  if (isClass(s.bg)) out.push(`ansi-bg-${s.bg}`);
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
      // 256-colour (5;n) and true colour (2;r;g;b), ECMA-48 / ITU T.416 (the `2:` form may carry a colour-space
      // id, which terminals ignore in the `;` form used here). A value out of range leaves the colour unset.
      const kind = codes[i + 1];
      let colour: Colour | undefined;
      if (kind === 5) {
        const n = codes[i + 2];
        if (Number.isInteger(n) && n >= 0 && n <= 255) colour = n;
      } else if (kind === 2) {
        const [r, g, b] = [codes[i + 2], codes[i + 3], codes[i + 4]];
        const ok = (v: number | undefined) => v !== undefined && Number.isInteger(v) && v >= 0 && v <= 255;
        if (ok(r) && ok(g) && ok(b)) colour = { r, g, b };
      }
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
    let fg = cssOf(this.style.fg);
    let bg = cssOf(this.style.bg);
    let buf = '';
    const flush = () => {
      const clean = buf.replace(/\r\n/g, '\n').replace(CONTROL, '');
      buf = '';
      if (clean === '') return;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.cls === cls && last.fg === fg && last.bg === bg) last.text += clean;
      else runs.push({ text: clean, cls, ...(fg === undefined ? {} : { fg }), ...(bg === undefined ? {} : { bg }) });
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
        fg = cssOf(this.style.fg);
        bg = cssOf(this.style.bg);
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
