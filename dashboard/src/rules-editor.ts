// The rule editor (admins): a dialog with CodeMirror 6 in TypeScript mode, completions from the rule API, the
// API's declarations beside it, and Save through `PUT /api/v1/rules/:name/source`. The service compiles and
// loads a saved source in a trial worker first: a refusal (400 `MYC_ERR_BAD_RULE`) is shown as text under the
// editor and the editor keeps what was typed. A chunk of its own, loaded with the first Edit or New rule click
// (rules-page.ts), so neither the first paint nor the Rules page carries CodeMirror.
//
// CodeMirror writes its styles with style-mod, which uses a <style> element when the editor lives in the
// document: the page's CSP (`style-src 'self'`) blocks that. Inside a shadow root style-mod uses a constructed
// stylesheet (`adoptedStyleSheets`), which that policy does not govern, so the editor is mounted in one and the
// CSP stays as it is (the same reasoning as the console's xterm, docs/dashboard.md).
import { autocompletion, type CompletionContext, type CompletionResult } from '@codemirror/autocomplete';
import { javascript, typescriptLanguage } from '@codemirror/lang-javascript';
import { EditorView, basicSetup } from 'codemirror';
// The rule API's declarations as text, bundled at build time from the file the service and `mycelium rules
// check` use: the editor's types cannot drift from it.
import ruleApiText from '../../services/rules/rule.ts?raw';
import { h, setText } from './dom.ts';
import { completionAt, parseRuleApi } from './rules-api-types.ts';
import { type RulesClient, RulesError } from './rules-client.ts';

const api = parseRuleApi(ruleApiText);

/** The source a new rule starts from (a plain object: a rule file needs no import to run). */
export function newRuleSource(name: string): string {
  return `// ${name}: runs on every temperature update of a node whose uid starts with "sensor-".
export default {
  name: '${name}',
  description: 'what this rule does',
  on: { update: { node: 'sensor-*', resource: 'temperature' } },
  async run(event, ctx) {
    if (event.type !== 'update') return;
    ctx.log.info(\`\${event.uid}: \${JSON.stringify(event.value)}\`);
  },
};
`;
}

function ruleCompletions(context: CompletionContext): CompletionResult | null {
  const line = context.state.doc.lineAt(context.pos);
  const spot = completionAt(line.text.slice(0, context.pos - line.from), api);
  if (spot === undefined || (spot.keys && spot.back === 0 && !context.explicit)) return null;
  return {
    from: context.pos - spot.back,
    options: spot.members.map((m) => ({
      label: m.name,
      type: m.method ? 'method' : 'property',
      detail: m.detail.slice(m.name.length).replace(/^\?/, ''),
      info: m.doc === undefined ? m.detail : `${m.detail}\n\n${m.doc}`,
      ...(spot.keys ? { boost: -1 } : {}),
    })),
    validFor: /^[\w$]*$/,
  };
}

const theme = EditorView.theme({
  '&': { height: '100%', fontSize: '13px', backgroundColor: '#fbfcfd', color: '#17202a' },
  '.cm-scroller': { fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace' },
  '.cm-gutters': { backgroundColor: '#eef1f5', color: '#5b6878', border: 'none' },
  '.cm-tooltip-autocomplete': { maxWidth: '640px' },
});

export interface RuleEditorDeps {
  client: RulesClient;
  /** A rule was saved and applied: the page refreshes its list. */
  saved(name: string): void;
}

export class RuleEditor {
  readonly el: HTMLElement;
  private readonly dialog = h('section', {
    class: 'overlay-panel rule-editor',
    role: 'dialog',
    'aria-modal': 'true',
    'aria-labelledby': 'rule-editor-title',
  });
  private readonly title = h('h2', { class: 'rule-editor-title', id: 'rule-editor-title' });
  private readonly nameRow = h('label', { class: 'rule-editor-name' }, 'Name ');
  private readonly nameInput = h('input', {
    id: 'rule-name',
    maxlength: '64',
    placeholder: 'fan-on-when-hot',
    spellcheck: 'false',
    autocomplete: 'off',
  });
  private readonly error = h('pre', { class: 'rule-editor-error', id: 'rule-editor-error', role: 'alert' });
  private readonly saveButton = h('button', { type: 'button', id: 'rule-save', class: 'primary' }, 'Save');
  private readonly view: EditorView;
  /** The rule being edited; undefined for a new one (its name comes from the field). */
  private name?: string;
  private generation = 0;

  constructor(private readonly deps: RuleEditorDeps) {
    const host = h('div', { class: 'rule-editor-host' });
    const shadow = host.attachShadow({ mode: 'open' });
    const mount = document.createElement('div');
    mount.className = 'rule-editor-mount';
    mount.style.height = '100%';
    shadow.append(mount);
    this.view = new EditorView({
      parent: mount,
      root: shadow,
      extensions: [
        basicSetup,
        javascript({ typescript: true }),
        typescriptLanguage.data.of({ autocomplete: ruleCompletions }),
        autocompletion({ activateOnTyping: true }),
        theme,
      ],
    });
    const close = h('button', { type: 'button', class: 'rule-editor-close', 'aria-label': 'close' }, '✕');
    const cancel = h('button', { type: 'button', id: 'rule-cancel' }, 'Cancel');
    close.addEventListener('click', () => this.close());
    cancel.addEventListener('click', () => this.close());
    this.saveButton.addEventListener('click', () => this.save());
    let previousName = '';
    this.nameInput.addEventListener('input', () => {
      // A new rule's source declares its name: follow the field while the template's line is still there.
      const next = this.nameInput.value.trim();
      const doc = this.view.state.doc.toString();
      const line = `name: '${previousName}'`;
      const at = doc.indexOf(line);
      if (at >= 0 && /^[\w.-]*$/.test(next)) {
        this.view.dispatch({ changes: { from: at, to: at + line.length, insert: `name: '${next}'` } });
        previousName = next;
      }
    });
    this.nameInput.addEventListener('focus', () => {
      previousName = /name: '([\w.-]*)'/.exec(this.view.state.doc.toString())?.[1] ?? '';
    });
    this.nameRow.append(this.nameInput);
    const reference = h('pre', { class: 'rule-api-text' }, ruleApiText);
    this.dialog.append(
      h('div', { class: 'rule-editor-head' }, this.title, close),
      this.nameRow,
      host,
      this.error,
      h('div', { class: 'rule-editor-actions' }, this.saveButton, cancel),
      h(
        'details',
        { class: 'rule-api' },
        h('summary', {}, 'Rule API (services/rules/rule.ts): what run(event, ctx) receives'),
        reference,
      ),
    );
    this.el = h('div', { class: 'overlay rule-editor-overlay', hidden: true }, this.dialog);
  }

  get isOpen(): boolean {
    return !this.el.hidden;
  }

  /** Opens a rule's source (fetched now, admins only) or, without a name, a new rule's template. */
  open(name: string | undefined): void {
    const generation = ++this.generation;
    this.name = name;
    this.el.hidden = false;
    this.showError(undefined);
    this.nameRow.hidden = name !== undefined;
    setText(this.title, name === undefined ? 'New rule' : `Edit ${name}`);
    this.dialog.dataset.rule = name ?? '';
    if (name === undefined) {
      this.nameInput.value = '';
      this.setDoc(newRuleSource('my-rule'));
      this.dialog.dataset.state = 'ready';
      this.nameInput.focus();
      return;
    }
    this.setDoc('');
    this.dialog.dataset.state = 'loading';
    this.saveButton.disabled = true;
    this.deps.client.source(name).then(
      (source) => {
        if (generation !== this.generation) return;
        this.setDoc(source);
        this.saveButton.disabled = false;
        this.dialog.dataset.state = 'ready';
        this.view.focus();
      },
      (err: unknown) => {
        if (generation !== this.generation) return;
        this.showError(err);
      },
    );
  }

  close(): void {
    this.generation++;
    this.el.hidden = true;
    this.saveButton.disabled = false;
  }

  private setDoc(text: string): void {
    this.view.dispatch({ changes: { from: 0, to: this.view.state.doc.length, insert: text } });
  }

  private save(): void {
    const name = this.name ?? this.nameInput.value.trim();
    if (name === '') {
      this.showError(new RulesError(400, 'MYC_ERR_BAD_RULE', 'give the rule a name'));
      this.nameInput.focus();
      return;
    }
    const generation = this.generation;
    this.saveButton.disabled = true;
    this.dialog.dataset.state = 'saving';
    this.deps.client.save(name, this.view.state.doc.toString()).then(
      () => {
        if (generation !== this.generation) return;
        this.close();
        this.deps.saved(name);
      },
      (err: unknown) => {
        if (generation !== this.generation) return;
        // The editor keeps its text: the author fixes what the message says and saves again.
        this.saveButton.disabled = false;
        this.showError(err);
      },
    );
  }

  private showError(err: unknown): void {
    if (err === undefined) {
      setText(this.error, '');
      this.error.hidden = true;
      return;
    }
    this.error.hidden = false;
    this.dialog.dataset.state = 'error';
    setText(this.error, err instanceof RulesError ? `${err.code}: ${err.message}` : String(err));
  }
}
