// The console panel of one agent (issue 12): a dialog over the cards with the commands the agent allows (a button
// each, with inputs for their parameters, checked against the advertised patterns before sending), a command line
// for admins when the agent takes shell commands, the selected request's live output (text only, ANSI colours as
// classes), a status line, cancel, and this session's history of requests to the node (kept while the page
// lives, per node). The interactive terminal (xterm.js) is a chunk of its own, loaded on the first open.
import './console.css';
import type { Json } from '../../services/protocol/messages.ts';
import type { ConsoleCapability, ConsoleCommand } from './console-capability.ts';
import { checkParams, parseCapability } from './console-capability.ts';
import type { ConsoleClient, ExecExitFrame, ExecMode } from './console-client.ts';
import { OutputLog } from './console-output.ts';
import type { TerminalView } from './console-terminal.ts';
import { formatTime, h, setText } from './dom.ts';

export interface ConsoleOpenRequest {
  uid: string;
  title: string;
  /** The node's `console` resource as it is now (a JSON value, or JSON text); the panel parses it. */
  capability: Json;
  admin: boolean;
}

/** Requests remembered per node; older ones leave the history (and their output with them). */
export const HISTORY_ENTRIES = 50;

export interface ConsoleTarget {
  uid: string;
  /** The node's name as its card shows it. */
  title: string;
  capability: ConsoleCapability;
  /** Admins also get the shell command line and the terminal (when the agent offers them). */
  admin: boolean;
}

interface Entry {
  id?: string;
  label: string;
  started: number;
  output: OutputLog;
  running: boolean;
  exit?: ExecExitFrame;
  item: HTMLLIElement;
}

const MODES: [ExecMode, string][] = [
  ['output', 'show output'],
  ['ok-ng', 'only ok / ng'],
  ['no-return', 'start and forget'],
];

/** The one-line summary of an exit, for the status line and the history. */
export function describeExit(e: ExecExitFrame): string {
  const parts: string[] = [e.status];
  if (e.code !== undefined && e.code !== null) parts.push(`exit ${e.code}`);
  if (e.signal) parts.push(e.signal);
  if (e.durationMs !== undefined) parts.push(`${Math.round(e.durationMs)} ms`);
  if (e.truncated) parts.push('output truncated');
  const text = parts.join(' · ');
  return e.reason ? `${text}: ${e.reason}` : text;
}

export class ConsolePanel {
  readonly el: HTMLElement;
  private target?: ConsoleTarget;
  private readonly history = new Map<string, Entry[]>();
  private selected?: Entry;
  private terminal?: TerminalView;
  private terminalLoading = false;
  /** The open node's `console` value as last rendered (the object, and its JSON text to compare a new one). */
  private rawCapability?: Json;
  private capabilityText?: string;

  private readonly title = h('h2', { id: 'console-title', class: 'console-title' });
  private readonly closeButton = h('button', { type: 'button', class: 'console-close', 'aria-label': 'close' }, '✕');
  private readonly modeSelect = h('select', { class: 'console-mode', 'aria-label': 'mode' });
  private readonly commands = h('div', { class: 'console-commands' });
  private readonly shellForm = h('form', { class: 'console-shell', hidden: true });
  private readonly shellInput = h('input', {
    type: 'text',
    class: 'console-shell-input',
    'aria-label': 'shell command',
    placeholder: 'shell command (runs with sh -c on the device)',
    autocomplete: 'off',
    spellcheck: 'false',
  });
  private readonly terminalButton = h(
    'button',
    { type: 'button', class: 'console-terminal-open', hidden: true },
    'Terminal',
  );
  private readonly status = h('p', { class: 'console-status', role: 'status' });
  private readonly cancelButton = h('button', { type: 'button', class: 'console-cancel', disabled: true }, 'Cancel');
  private readonly outputBox = h('div', { class: 'console-output-box' });
  private readonly historyList = h('ol', { class: 'console-history', 'aria-label': 'history' });
  private readonly terminalBox = h('div', { class: 'console-terminal', hidden: true });

  constructor(private readonly client: ConsoleClient) {
    for (const [value, label] of MODES) this.modeSelect.append(h('option', { value }, label));
    this.shellForm.append(this.shellInput, h('button', { type: 'submit' }, 'Run'));
    this.shellForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const line = this.shellInput.value;
      if (line.trim() === '' || this.target === undefined) return;
      this.run({ shell: line }, `$ ${line}`);
    });
    this.cancelButton.addEventListener('click', () => {
      const e = this.selected;
      if (e?.id !== undefined && e.running && !this.client.cancel(e.id)) this.setStatus('error', 'not connected');
    });
    this.terminalButton.addEventListener('click', () => this.openTerminal());
    this.closeButton.addEventListener('click', () => this.close());
    const dialog = h(
      'section',
      { class: 'overlay-panel console', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'console-title' },
      h('header', { class: 'console-head' }, this.title, this.modeSelect, this.terminalButton, this.closeButton),
      this.commands,
      this.shellForm,
      this.terminalBox,
      h('div', { class: 'console-status-row' }, this.status, this.cancelButton),
      h('div', { class: 'console-main' }, this.outputBox, this.historyList),
    );
    this.el = h('div', { class: 'overlay console-overlay', hidden: true }, dialog);
    this.el.addEventListener('click', (ev) => {
      if (ev.target === this.el) this.close();
    });
    document.addEventListener('keydown', (ev) => {
      // Escape inside the terminal belongs to the remote program (vi, less), not to the dialog.
      if (ev.key === 'Escape' && this.isOpen && !this.terminalBox.contains(ev.target as Node)) this.close();
    });
  }

  get isOpen(): boolean {
    return !this.el.hidden;
  }

  /** Opens the panel with what the agent advertises now; a value that is no capability shows as such. */
  openFor(req: ConsoleOpenRequest): void {
    const capability = parseCapability(req.capability);
    this.rawCapability = req.capability;
    this.capabilityText = typeof req.capability === 'string' ? req.capability : JSON.stringify(req.capability);
    this.open({
      uid: req.uid,
      title: req.title,
      admin: req.admin,
      capability: capability ?? { commands: [], shell: false, pty: false },
    });
    if (capability === undefined) this.setStatus('error', 'This node advertises a console this page cannot read.');
  }

  /**
   * The node's `console` resource may have changed (an agent restarted with another commands file): while this
   * node's panel is open, its buttons, shell line and terminal button follow, and the session's history stays.
   * Called for every change of any node, so it returns at once unless the value really changed.
   */
  capabilityChanged(uid: string, value: Json | undefined): void {
    const target = this.target;
    if (target === undefined || target.uid !== uid || !this.isOpen || value === undefined) return;
    if (value === this.rawCapability) return;
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    if (text === this.capabilityText) return;
    this.rawCapability = value;
    this.capabilityText = text;
    const capability = parseCapability(value);
    if (capability === undefined) return;
    this.target = { ...target, capability };
    this.renderCommands(capability.commands);
    this.shellForm.hidden = !(target.admin && capability.shell);
    this.terminalButton.hidden = !(target.admin && capability.pty);
  }

  open(target: ConsoleTarget): void {
    if (this.target?.uid !== target.uid) this.closeTerminal();
    this.target = target;
    setText(this.title, `Console · ${target.title}`);
    this.renderCommands(target.capability.commands);
    this.shellForm.hidden = !(target.admin && target.capability.shell);
    this.terminalButton.hidden = !(target.admin && target.capability.pty);
    const entries = this.history.get(target.uid) ?? [];
    this.historyList.replaceChildren(...entries.map((e) => e.item).reverse());
    this.select(entries[entries.length - 1]);
    if (entries.length === 0) {
      this.setStatus(
        'idle',
        target.capability.commands.length === 0 && !this.shellForm.hidden
          ? 'This agent allows no named commands.'
          : target.capability.commands.length === 0
            ? 'This agent allows no commands.'
            : 'Pick a command.',
      );
    }
    this.el.hidden = false;
  }

  close(): void {
    this.closeTerminal();
    this.el.hidden = true;
  }

  /** The page logged out or changed its token: the terminal and the history belonged to the previous user. */
  reset(): void {
    this.close();
    this.history.clear();
    this.historyList.replaceChildren();
    this.select(undefined);
    this.target = undefined;
  }

  private renderCommands(commands: ConsoleCommand[]): void {
    this.commands.replaceChildren(...commands.map((c) => this.commandForm(c)));
  }

  private commandForm(command: ConsoleCommand): HTMLFormElement {
    const inputs = new Map<string, { input: HTMLInputElement; error: HTMLElement }>();
    const form = h('form', { class: 'console-command', 'data-command': command.name });
    const button = h('button', { type: 'submit', class: 'console-run' }, command.name);
    form.append(button);
    if (command.description) form.title = command.description;
    for (const p of command.params) {
      const input = h('input', {
        type: 'text',
        name: p.name,
        placeholder: p.name,
        title: `${p.name}: ${p.pattern}`,
        'aria-label': `${command.name} ${p.name}`,
        autocomplete: 'off',
        spellcheck: 'false',
      });
      const error = h('span', { class: 'console-param-error', role: 'alert' });
      inputs.set(p.name, { input, error });
      form.append(h('label', { class: 'console-param' }, input, error));
    }
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const values: Record<string, string> = Object.create(null);
      for (const [name, { input }] of inputs) values[name] = input.value;
      const checked = checkParams(command, values);
      for (const [name, { input, error }] of inputs) {
        const message = checked.ok ? '' : (checked.errors.get(name) ?? '');
        setText(error, message);
        input.setAttribute('aria-invalid', String(message !== ''));
      }
      if (!checked.ok) {
        this.setStatus('invalid', `${command.name}: ${[...checked.errors.keys()].join(', ')} not valid`);
        return;
      }
      const label = [command.name, ...Object.entries(checked.params).map(([k, v]) => `${k}=${v}`)].join(' ');
      this.run({ command: command.name, params: checked.params }, label);
    });
    return form;
  }

  private run(what: { command?: string; params?: Record<string, string>; shell?: string }, label: string): void {
    const target = this.target;
    if (target === undefined) return;
    const mode = this.modeSelect.value as ExecMode;
    const output = new OutputLog();
    const item = h('li', { class: 'console-entry' });
    const entry: Entry = { label, started: Date.now(), output, running: true, item };
    item.addEventListener('click', () => this.select(entry));
    const id = this.client.exec(
      { uid: target.uid, mode, ...what },
      {
        output: (f) => entry.output.append(f.stream, f.data),
        exit: (f) => this.finished(entry, f),
      },
    );
    if (id === undefined) {
      this.setStatus('error', 'Not connected to the broker.');
      return;
    }
    entry.id = id;
    item.dataset.id = id;
    const list = this.history.get(target.uid) ?? [];
    list.push(entry);
    if (list.length > HISTORY_ENTRIES) list.shift()?.item.remove();
    this.history.set(target.uid, list);
    this.historyList.prepend(item);
    this.renderEntry(entry);
    this.select(entry);
  }

  private finished(entry: Entry, exit: ExecExitFrame): void {
    entry.running = false;
    entry.exit = exit;
    entry.output.note(`[${describeExit(exit)}]`, `console-note console-exit-${exit.status}`);
    this.renderEntry(entry);
    if (this.selected === entry) this.showStatusOf(entry);
  }

  private renderEntry(entry: Entry): void {
    entry.item.dataset.status = entry.exit?.status ?? 'running';
    setText(
      entry.item,
      `${formatTime(entry.started)}  ${entry.label}  → ${entry.exit ? describeExit(entry.exit) : 'running…'}`,
    );
  }

  private select(entry: Entry | undefined): void {
    if (this.selected) this.selected.item.removeAttribute('aria-current');
    this.selected = entry;
    if (entry === undefined) {
      this.outputBox.replaceChildren();
      this.cancelButton.disabled = true;
      return;
    }
    entry.item.setAttribute('aria-current', 'true');
    this.outputBox.replaceChildren(entry.output.el);
    this.showStatusOf(entry);
  }

  private showStatusOf(entry: Entry): void {
    this.cancelButton.disabled = !entry.running;
    if (entry.running) this.setStatus('running', `${entry.label}: running…`);
    else if (entry.exit) this.setStatus(entry.exit.status, `${entry.label}: ${describeExit(entry.exit)}`);
  }

  private setStatus(state: string, text: string): void {
    this.status.dataset.state = state;
    setText(this.status, text);
  }

  // -----------------------------------------------------------------------------------------
  // The terminal (admins, agents with --allow-pty)

  private openTerminal(): void {
    const target = this.target;
    if (target === undefined || this.terminal !== undefined || this.terminalLoading) return;
    this.terminalLoading = true;
    this.terminalBox.hidden = false;
    setText(this.terminalBox, 'Loading the terminal…');
    import('./console-terminal.ts')
      .then(({ TerminalView }) => {
        this.terminalLoading = false;
        if (this.target?.uid !== target.uid || this.el.hidden) return;
        this.terminalBox.replaceChildren();
        this.terminal = new TerminalView(this.terminalBox, this.client, target.uid, (exit) => {
          this.setStatus(exit.status, `terminal: ${describeExit(exit)}`);
        });
      })
      .catch((err: unknown) => {
        this.terminalLoading = false;
        setText(this.terminalBox, 'The terminal did not load.');
        console.warn('mycelium: the terminal did not load', err);
      });
  }

  private closeTerminal(): void {
    this.terminal?.close();
    this.terminal = undefined;
    this.terminalBox.replaceChildren();
    this.terminalBox.hidden = true;
  }
}
