// The Rules page (issue 14, "Visibility"): every rule the rules service runs, with its state and the reason,
// triggers, counts, p50/p99, last run, last error and its recent runs, refreshed while the page is shown. Admins
// get Enable/Disable, Edit and New rule; the editor (CodeMirror) is a further chunk loaded with the first Edit.
// A chunk of its own, loaded with the first click on "Rules" (rules-opener.ts). Rule errors quote what devices
// and rule authors wrote: everything from the answer is set as text (dom.ts).
import './rules.css';
import { formatTime, h, setText } from './dom.ts';
import { type RuleRecord, type RulesClient, RulesError, type RunRecord } from './rules-client.ts';
import type { RuleEditor } from './rules-editor.ts';

// The opener builds the client from what this chunk exports: one chunk for the page and its client.
export { RulesClient } from './rules-client.ts';

/** How often the page asks for the rules while it is shown. */
export const RULES_POLL_MS = 3000;
/** Runs shown per rule (the service keeps --recent-runs, 20 by default). */
const RECENT_SHOWN = 20;

export interface RulesPageDeps {
  client: RulesClient;
}

function ms(v: number | undefined): string {
  if (v === undefined) return '–';
  if (!Number.isFinite(v)) return '> 10 s';
  return v < 10 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`;
}

function runText(r: RunRecord): string {
  return `${formatTime(r.at)} · ${r.status} · ${ms(r.ms)}${r.uid === undefined ? '' : ` · ${r.uid}`}`;
}

function problem(err: unknown): string {
  if (err instanceof RulesError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

class RuleCard {
  readonly el: HTMLElement;
  private readonly status = h('span', { class: 'rule-status' });
  private readonly reason = h('div', { class: 'rule-reason' });
  private readonly description = h('p', { class: 'rule-description' });
  private readonly triggers = h('ul', { class: 'rule-triggers' });
  private readonly stats = new Map<string, HTMLElement>();
  private readonly lastError = h('pre', { class: 'rule-last-error' });
  private readonly recentCount = h('span', { class: 'rule-recent-count' });
  private readonly recent = h('ol', { class: 'rule-recent' });
  private readonly toggle = h('button', { type: 'button', class: 'rule-toggle' });
  readonly result = h('div', { class: 'rule-result', role: 'status' });
  private record?: RuleRecord;
  private recentKey = '';

  constructor(
    readonly name: string,
    admin: boolean,
    actions: { toggle(card: RuleCard, enable: boolean): void; edit(name: string): void },
  ) {
    const dl = h('dl', { class: 'rule-stats' });
    for (const [key, label] of [
      ['runs', 'Runs'],
      ['errors', 'Errors'],
      ['skipped', 'Skipped'],
      ['dropped', 'Dropped'],
      ['p50', 'p50'],
      ['p99', 'p99'],
      ['last-run', 'Last run'],
      ['limit', 'Time limit'],
    ] as const) {
      const dd = h('dd', { 'data-stat': key }, '–');
      this.stats.set(key, dd);
      dl.append(h('div', { class: 'rule-stat' }, h('dt', {}, label), dd));
    }
    const head = h('div', { class: 'rule-head' }, h('h2', { class: 'rule-name' }, name), this.status);
    const actionsRow = h('div', { class: 'rule-actions' });
    if (admin) {
      const edit = h('button', { type: 'button', class: 'rule-edit' }, 'Edit');
      edit.addEventListener('click', () => actions.edit(name));
      this.toggle.addEventListener('click', () => actions.toggle(this, this.record?.status === 'disabled'));
      actionsRow.append(this.toggle, edit);
    }
    this.el = h(
      'article',
      { class: 'card rule', 'data-rule': name },
      head,
      this.reason,
      this.description,
      this.triggers,
      dl,
      h('div', { class: 'rule-last-error-row' }, h('span', { class: 'rule-label' }, 'Last error'), this.lastError),
      h('details', { class: 'rule-runs' }, h('summary', {}, 'Recent runs ', this.recentCount), this.recent),
      actionsRow,
      this.result,
    );
  }

  render(r: RuleRecord): void {
    this.record = r;
    this.el.dataset.status = r.status;
    this.el.dataset.runs = String(r.runs);
    setText(this.status, r.status);
    setText(this.reason, r.reason ?? '');
    this.reason.hidden = r.reason === undefined;
    setText(this.description, r.description ?? '');
    this.description.hidden = r.description === undefined;
    const triggers = r.triggers.join('\n');
    if (this.triggers.dataset.text !== triggers) {
      this.triggers.dataset.text = triggers;
      this.triggers.replaceChildren(...r.triggers.map((t) => h('li', {}, t)));
    }
    this.set('runs', String(r.runs));
    this.set('errors', String(r.errors));
    this.set('skipped', String(r.skipped));
    this.set('dropped', String(r.dropped));
    this.set('p50', ms(r.p50Ms));
    this.set('p99', ms(r.p99Ms));
    this.set('last-run', r.lastRun === undefined ? 'never' : runText(r.lastRun));
    this.set('limit', ms(r.timeLimitMs));
    setText(
      this.lastError,
      r.lastError === undefined ? 'none' : `${formatTime(r.lastError.at)}: ${r.lastError.message}`,
    );
    this.lastError.dataset.none = String(r.lastError === undefined);
    setText(this.toggle, r.status === 'disabled' ? 'Enable' : 'Disable');
    this.renderRecent(r.recent.slice(0, RECENT_SHOWN));
  }

  private renderRecent(runs: RunRecord[]): void {
    const key = runs.length === 0 ? '' : `${runs.length}:${runs[0].at}:${runs[0].status}`;
    if (key === this.recentKey) return;
    this.recentKey = key;
    setText(this.recentCount, `(${runs.length})`);
    this.recent.replaceChildren(
      ...runs.map((run) =>
        h(
          'li',
          { class: 'rule-run', 'data-status': run.status },
          h('span', { class: 'rule-run-head' }, `${runText(run)} · ${run.trigger}`),
          run.error === undefined ? undefined : h('pre', { class: 'rule-run-error' }, run.error),
        ),
      ),
    );
  }

  private set(key: string, text: string): void {
    const el = this.stats.get(key);
    if (el) setText(el, text);
  }
}

export class RulesPage {
  readonly el = h('section', { class: 'rules-page', id: 'rules', hidden: true });
  private readonly note = h('div', { class: 'rules-note', role: 'status' });
  private readonly newButton = h('button', { type: 'button', id: 'rule-new', class: 'primary' }, 'New rule');
  private readonly list = h('div', { class: 'grid rules-grid' });
  private readonly empty = h('div', { class: 'empty', id: 'rules-empty', hidden: true }, 'No rule in the folder.');
  private readonly cards = new Map<string, RuleCard>();
  private admin = false;
  private shown = false;
  private timer?: number;
  private inflight?: AbortController;
  private editor?: Promise<RuleEditor>;

  constructor(private readonly deps: RulesPageDeps) {
    this.newButton.hidden = true;
    this.newButton.addEventListener('click', () => this.edit(undefined));
    this.el.append(
      h('div', { class: 'rules-toolbar' }, h('h2', { class: 'rules-title' }, 'Rules'), this.newButton, this.note),
      this.empty,
      this.list,
    );
  }

  /** Only admins see the Enable/Disable, Edit and New rule controls: cards are rebuilt when it changes. */
  setAdmin(admin: boolean): void {
    if (admin === this.admin) return;
    this.admin = admin;
    this.newButton.hidden = !admin;
    if (!admin) this.closeEditor();
    for (const card of this.cards.values()) card.el.remove();
    this.cards.clear();
    if (this.shown) this.refresh();
  }

  show(): void {
    this.el.hidden = false;
    if (this.shown) return;
    this.shown = true;
    this.refresh();
  }

  hide(): void {
    this.el.hidden = true;
    this.shown = false;
    clearTimeout(this.timer);
    this.inflight?.abort();
  }

  /** The editor sits in the page: the next user (or a demoted one) must not find its source and Save button. */
  private closeEditor(): void {
    this.editor?.then(
      (e) => e.close(),
      () => undefined,
    );
  }

  /** Logged out or a new token: nothing of the old session stays on screen. */
  reset(): void {
    this.hide();
    this.closeEditor();
    for (const card of this.cards.values()) card.el.remove();
    this.cards.clear();
    setText(this.note, '');
  }

  /** Asks for the list now, then every RULES_POLL_MS while shown (one request at a time). */
  refresh(): void {
    clearTimeout(this.timer);
    this.inflight?.abort();
    const ctl = new AbortController();
    this.inflight = ctl;
    this.deps.client
      .list(ctl.signal)
      .then(
        (rules) => {
          this.render(rules);
          setText(this.note, '');
          this.el.dataset.state = 'ready';
        },
        (err: unknown) => {
          if (ctl.signal.aborted) return;
          const unavailable = err instanceof RulesError && err.status === 503;
          setText(this.note, unavailable ? 'No rules service is running.' : `Rules: ${problem(err)}`);
          this.el.dataset.state = unavailable ? 'unavailable' : 'error';
        },
      )
      .finally(() => {
        if (this.inflight !== ctl || !this.shown) return;
        this.inflight = undefined;
        this.timer = window.setTimeout(() => this.refresh(), RULES_POLL_MS);
      });
  }

  private render(rules: RuleRecord[]): void {
    const seen = new Set<string>();
    let prev: HTMLElement | undefined;
    for (const r of rules) {
      seen.add(r.name);
      let card = this.cards.get(r.name);
      if (card === undefined) {
        card = new RuleCard(r.name, this.admin, {
          toggle: (c, enable) => this.toggle(c, enable),
          edit: (name) => this.edit(name),
        });
        this.cards.set(r.name, card);
      }
      card.render(r);
      // The service answers sorted by name: keep that order with at most one move per card.
      const want = prev === undefined ? this.list.firstChild : prev.nextSibling;
      if (want !== card.el) this.list.insertBefore(card.el, want);
      prev = card.el;
    }
    for (const [name, card] of this.cards) {
      if (seen.has(name)) continue;
      card.el.remove();
      this.cards.delete(name);
    }
    this.empty.hidden = rules.length > 0;
  }

  private toggle(card: RuleCard, enable: boolean): void {
    card.result.dataset.result = 'pending';
    setText(card.result, enable ? 'enabling…' : 'disabling…');
    this.deps.client.setEnabled(card.name, enable).then(
      (r) => {
        card.render(r);
        card.result.dataset.result = 'ok';
        setText(card.result, enable ? 'enabled' : 'disabled');
      },
      (err: unknown) => {
        card.result.dataset.result = 'error';
        setText(card.result, problem(err));
      },
    );
  }

  private edit(name: string | undefined): void {
    this.editor ??= import('./rules-editor.ts').then(({ RuleEditor }) => {
      const editor = new RuleEditor({ client: this.deps.client, saved: () => this.refresh() });
      this.el.append(editor.el);
      return editor;
    });
    // A failed load (a network blip fetching the chunk) may be retried by the next click.
    this.editor.then(
      (editor) => editor.open(name),
      (err: unknown) => {
        this.editor = undefined;
        setText(this.note, `The editor did not load: ${problem(err)}`);
      },
    );
  }
}
