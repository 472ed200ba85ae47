// One request's output on screen: a <pre> of spans whose text is set with textContent (never markup, whatever a
// device prints), coloured by CSS classes from the ANSI parser, with a cap so a chatty command cannot grow the
// page without bound (the agent caps output too; this is the page's own guard).
import { AnsiParser } from './console-ansi.ts';
import { h } from './dom.ts';

/** Characters of output one request keeps on screen; the rest is counted, not shown. */
export const MAX_SHOWN_CHARS = 512 * 1024;

export class OutputLog {
  /** The element that shows this log; moved into the panel when its request is selected. */
  readonly el = h('pre', { class: 'console-output', 'aria-label': 'output', tabindex: '0' });
  private readonly parsers = new Map<string, AnsiParser>();
  private shown = 0;
  private dropped = 0;
  private readonly droppedNote = h('span', { class: 'console-dropped', hidden: true });
  /** The last span of device output (notes of the panel's own are never joined). */
  private last?: HTMLSpanElement;

  /** Appends a chunk of a stream (`stdout`, `stderr`, `pty`); stderr gets its own class and ANSI state. */
  append(stream: string, data: string): void {
    if (this.shown >= MAX_SHOWN_CHARS) {
      this.noteDropped(data.length);
      return;
    }
    const room = MAX_SHOWN_CHARS - this.shown;
    const text = data.length > room ? data.slice(0, room) : data;
    if (text.length < data.length) this.noteDropped(data.length - text.length);
    let parser = this.parsers.get(stream);
    if (parser === undefined) {
      parser = new AnsiParser();
      this.parsers.set(stream, parser);
    }
    const stick = this.atBottom();
    for (const run of parser.push(text)) {
      const cls = [stream === 'stderr' ? 'console-stderr' : '', run.cls].filter(Boolean).join(' ');
      // Output in the same style as the last run joins its span as a text node: a command writing thousands of
      // small chunks makes a few elements, not thousands.
      if (
        this.last !== undefined &&
        this.last.className === cls &&
        this.last.style.color === (run.fg ?? '') &&
        this.last.style.backgroundColor === (run.bg ?? '') &&
        this.last.nextSibling === this.tail()
      ) {
        this.last.append(run.text);
        continue;
      }
      const span = h('span', cls ? { class: cls } : {});
      // CSSOM, not a style attribute: the CSP (style-src without 'unsafe-inline') allows the former only. The
      // values are `rgb(n, n, n)` the parser built from numbers, never text from the device.
      if (run.fg !== undefined) span.style.color = run.fg;
      if (run.bg !== undefined) span.style.backgroundColor = run.bg;
      span.textContent = run.text;
      this.el.insertBefore(span, this.tail());
      this.last = span;
    }
    this.shown += text.length;
    if (stick) this.el.scrollTop = this.el.scrollHeight;
  }

  /** A line of the panel's own (not device output), e.g. the exit summary. */
  note(text: string, cls = 'console-note'): void {
    const span = h('span', { class: cls });
    span.textContent = this.el.textContent === '' || this.el.textContent?.endsWith('\n') ? text : `\n${text}`;
    this.el.insertBefore(span, this.tail());
    this.last = undefined;
  }

  get text(): string {
    return this.el.textContent ?? '';
  }

  /** The element new output goes before: the dropped-count line when shown, else the end. */
  private tail(): ChildNode | null {
    return this.droppedNote.isConnected ? this.droppedNote : null;
  }

  private noteDropped(n: number): void {
    this.dropped += n;
    this.droppedNote.textContent = `\n… ${this.dropped} more characters not shown`;
    this.droppedNote.hidden = false;
    if (!this.droppedNote.isConnected) this.el.append(this.droppedNote);
  }

  private atBottom(): boolean {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 4;
  }
}
