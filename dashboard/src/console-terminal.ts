// The interactive terminal of an agent (admins, agent started with --allow-pty): xterm.js on a PTY the agent opens
// (`pty-open`), keystrokes as `pty-input`, the terminal's size as `pty-resize`, `exec-cancel` to close. A chunk of
// its own (dynamic import from console-panel.ts), so the card grid never carries xterm.js.
//
// CSP: the page allows `style-src 'self'` only. xterm's DOM renderer puts its theme and cell-size rules in
// <style> elements, which that policy blocks; a constructed stylesheet (document.adoptedStyleSheets) is not
// subject to it, so `mirrorStyles` copies each of those elements' rules into one and keeps them in step. The
// <style> elements themselves stay inert (the browser logs one CSP report each). Element.style, which xterm
// uses for positions, is the CSSOM and allowed.
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import type { ConsoleClient, ExecExitFrame } from './console-client.ts';

/** Lines of scrollback the terminal keeps. */
export const SCROLLBACK = 2_000;

/** Copies the rules of every <style> element under `root` into constructed stylesheets; returns the undo. */
export function mirrorStyles(root: HTMLElement): () => void {
  const sheets = new Map<HTMLStyleElement, CSSStyleSheet>();
  const sync = (el: HTMLStyleElement) => {
    let sheet = sheets.get(el);
    if (sheet === undefined) {
      sheet = new CSSStyleSheet();
      sheets.set(el, sheet);
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    }
    sheet.replaceSync(el.textContent ?? '');
  };
  const scan = () => {
    for (const el of root.querySelectorAll('style')) sync(el);
    for (const [el, sheet] of sheets) {
      if (!el.isConnected) {
        sheets.delete(el);
        document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
      }
    }
  };
  const observer = new MutationObserver(scan);
  observer.observe(root, { subtree: true, childList: true, characterData: true });
  scan();
  return () => {
    observer.disconnect();
    const mine = new Set(sheets.values());
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => !mine.has(s));
    sheets.clear();
  };
}

export class TerminalView {
  private readonly term: Terminal;
  private readonly fit = new FitAddon();
  private readonly id?: string;
  private readonly unmirror: () => void;
  private readonly resizeObserver: ResizeObserver;
  private closed = false;

  constructor(
    container: HTMLElement,
    private readonly client: ConsoleClient,
    uid: string,
    onExit: (exit: ExecExitFrame) => void,
  ) {
    this.term = new Terminal({ scrollback: SCROLLBACK, convertEol: false, cursorBlink: true });
    this.term.loadAddon(this.fit);
    this.unmirror = mirrorStyles(container);
    this.term.open(container);
    this.fit.fit();
    this.id = client.ptyOpen(uid, this.term.cols, this.term.rows, {
      output: (f) => this.term.write(f.data),
      exit: (f) => {
        this.closed = true;
        this.term.write(`\r\n[terminal closed: ${f.status}${f.reason ? `: ${f.reason}` : ''}]\r\n`);
        onExit(f);
      },
    });
    if (this.id === undefined) this.term.write('[not connected to the broker]\r\n');
    this.term.onData((data) => {
      if (this.id === undefined || this.closed) return;
      const dropped = this.client.ptyInput(this.id, data);
      if (dropped > 0) this.term.write(`\r\n[paste too long: ${dropped} characters not sent]\r\n`);
    });
    this.term.onResize(({ cols, rows }) => {
      if (this.id !== undefined && !this.closed) this.client.ptyResize(this.id, cols, rows);
    });
    this.resizeObserver = new ResizeObserver(() => this.fit.fit());
    this.resizeObserver.observe(container);
    this.term.focus();
  }

  close(): void {
    if (this.id !== undefined && !this.closed) this.client.cancel(this.id);
    this.closed = true;
    this.resizeObserver.disconnect();
    this.term.dispose();
    this.unmirror();
  }
}
