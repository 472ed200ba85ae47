// The API keys of the caller's organisation (admins; docs/accounts.md, "Tokens and keys"): a list from
// `GET /api/v1/keys` (never the key text: the broker has only its hash), a form that creates one with
// `POST /api/v1/keys` and shows its text once, with a copy button and a warning, and revocation with an in-page
// confirmation (`DELETE /api/v1/keys/:id`). Every string from the broker is set as text.
import { type AccountContext, failureText, listOrgs, rest } from './account-rest.ts';
import { confirmInRow } from './account-ui.ts';
import { formatTime, h, setText } from './dom.ts';

export interface KeyView {
  id: string;
  role: string;
  nodeUid: string | null;
  label: string;
  expiresAt: number | null;
  lastUsedAt: number | null;
  revoked: boolean;
}

const TTLS: [string, string][] = [
  ['', 'never expires'],
  ['3600', '1 hour'],
  ['86400', '1 day'],
  ['2592000', '30 days'],
  ['7776000', '90 days'],
  ['31536000', '1 year'],
];

export function keyState(k: KeyView, now = Date.now()): 'active' | 'revoked' | 'expired' {
  if (k.revoked) return 'revoked';
  return k.expiresAt !== null && k.expiresAt <= now ? 'expired' : 'active';
}

function parseKey(v: unknown): KeyView | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const k = v as Record<string, unknown>;
  if (typeof k.id !== 'string' || typeof k.role !== 'string') return undefined;
  const num = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x : null);
  return {
    id: k.id,
    role: k.role,
    nodeUid: typeof k.nodeUid === 'string' ? k.nodeUid : null,
    label: typeof k.label === 'string' ? k.label : '',
    expiresAt: num(k.expiresAt),
    lastUsedAt: num(k.lastUsedAt),
    revoked: k.revoked === true,
  };
}

export class KeysPage {
  readonly el: HTMLElement;
  private readonly rows = h('tbody', {});
  private readonly status = h('p', { class: 'acct-status', role: 'status', id: 'keys-status' });
  private readonly role = h('select', { id: 'key-role', 'aria-label': 'role' });
  private readonly node = h('input', {
    type: 'text',
    id: 'key-node',
    placeholder: 'node uid (device key)',
    'aria-label': 'node',
    autocomplete: 'off',
    spellcheck: 'false',
    hidden: true,
  });
  private readonly ttl = h('select', { id: 'key-ttl', 'aria-label': 'expiry' });
  private readonly label = h('input', {
    type: 'text',
    id: 'key-label',
    placeholder: 'label (what it is for)',
    'aria-label': 'label',
    maxlength: '100',
    autocomplete: 'off',
  });
  private readonly org = h('select', { id: 'key-org', 'aria-label': 'organisation', hidden: true });
  private readonly created = h('div', { class: 'acct-secret', id: 'key-created', hidden: true });

  constructor(private readonly ctx: AccountContext) {
    for (const [value, text] of [
      ['viewer', 'viewer'],
      ['operator', 'operator'],
      ['admin', 'admin'],
      ['node', 'device (one node)'],
    ]) {
      this.role.append(h('option', { value }, text));
    }
    for (const [value, text] of TTLS) this.ttl.append(h('option', { value }, text));
    this.role.addEventListener('change', () => {
      this.node.hidden = this.role.value !== 'node';
    });
    const form = h(
      'form',
      { class: 'acct-form', id: 'key-create' },
      this.org,
      this.role,
      this.node,
      this.ttl,
      this.label,
      h('button', { type: 'submit', class: 'primary', id: 'key-create-submit' }, 'Create key'),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.create().catch((err: unknown) => this.say(`Not created: ${failureText(err)}`, 'error'));
    });
    const table = h(
      'table',
      { class: 'acct-table', id: 'keys-table' },
      h(
        'thead',
        {},
        h('tr', {}, ...['Id', 'Label', 'Role', 'Node', 'Expires', 'Last used', 'State', ''].map((t) => h('th', {}, t))),
      ),
      this.rows,
    );
    this.el = h(
      'section',
      { class: 'acct-section', id: 'keys-page' },
      h('h3', {}, 'API keys'),
      h('p', { class: 'acct-hint' }, 'For scripts, gateways and devices: sent as Authorization: Bearer myk_…'),
      form,
      this.created,
      this.status,
      h('div', { class: 'acct-scroll' }, table),
    );
  }

  /** Fills the list (and, for a system-wide admin, the organisation choice). */
  async load(): Promise<void> {
    const systemWide = this.ctx.org() === undefined;
    this.org.hidden = !systemWide;
    if (systemWide && this.org.options.length === 0) {
      for (const o of await listOrgs(this.ctx)) this.org.append(h('option', { value: o.name }, o.name));
    }
    await this.refresh();
  }

  /** Forgets what the previous user saw, above all a key text still on screen. */
  reset(): void {
    this.hideCreated();
    this.rows.replaceChildren();
    this.org.replaceChildren();
    setText(this.status, '');
  }

  private async refresh(): Promise<void> {
    const body = await rest(this.ctx.base, '/api/v1/keys', { token: this.ctx.token() });
    const keys = (Array.isArray(body.keys) ? (body.keys as unknown[]) : [])
      .map(parseKey)
      .filter((k): k is KeyView => k !== undefined);
    this.rows.replaceChildren(...keys.map((k) => this.row(k)));
    if (keys.length === 0) this.rows.append(h('tr', {}, h('td', { colspan: '8', class: 'acct-hint' }, 'No keys yet.')));
  }

  private row(k: KeyView): HTMLTableRowElement {
    const state = keyState(k);
    const action = h('td', { class: 'acct-actions' });
    if (state === 'active') {
      const revoke = h('button', { type: 'button', class: 'key-revoke' }, 'Revoke');
      revoke.addEventListener('click', () => this.confirmRevoke(k, action, revoke));
      action.append(revoke);
    }
    return h(
      'tr',
      { 'data-key': k.id, 'data-state': state },
      h('td', { class: 'mono' }, k.id),
      h('td', {}, k.label),
      h('td', {}, k.role),
      h('td', {}, k.nodeUid ?? '–'),
      h('td', {}, k.expiresAt === null ? 'never' : formatTime(k.expiresAt)),
      h('td', {}, k.lastUsedAt === null ? 'never' : formatTime(k.lastUsedAt)),
      h('td', { class: `key-state key-${state}` }, state),
      action,
    );
  }

  /** Revocation asks once more in the row itself. */
  private confirmRevoke(k: KeyView, cell: HTMLElement, revoke: HTMLButtonElement): void {
    confirmInRow(cell, revoke, {
      cls: 'key-revoke',
      warning: 'Scripts using it stop working. ',
      yes: 'Revoke now',
      act: async () => {
        await rest(this.ctx.base, `/api/v1/keys/${encodeURIComponent(k.id)}`, {
          method: 'DELETE',
          token: this.ctx.token(),
        });
        this.done(`Key ${k.id} revoked: refused everywhere within seconds.`);
      },
      failed: (err) => this.say(`Not revoked: ${failureText(err)}`, 'error'),
    });
  }

  /** A change made: say so, then reload the list (a failed reload is reported as such, not as a failed change). */
  private done(text: string): void {
    this.say(text, 'ok');
    this.refresh().catch((err: unknown) => this.say(`${text} The list was not reloaded: ${failureText(err)}`, 'error'));
  }

  private async create(): Promise<void> {
    const body: Record<string, unknown> = {};
    if (this.role.value === 'node') {
      const node = this.node.value.trim();
      if (node === '') throw new Error('a device key needs the node uid');
      body.node = node;
    } else body.role = this.role.value;
    if (this.ttl.value !== '') body.ttlSeconds = Number(this.ttl.value);
    const label = this.label.value.trim();
    if (label !== '') body.label = label;
    if (!this.org.hidden && this.org.value !== '') body.org = this.org.value;
    const answer = await rest(this.ctx.base, '/api/v1/keys', { method: 'POST', token: this.ctx.token(), body });
    const text = typeof answer.text === 'string' ? answer.text : '';
    this.label.value = '';
    this.node.value = '';
    this.showCreated(text);
    this.say('', 'ok');
    await this.refresh();
  }

  /** The key text, this once: in a read-only field with a copy button; Done (or closing) wipes it. */
  private showCreated(text: string): void {
    const field = h('input', {
      type: 'text',
      id: 'key-text',
      readonly: true,
      value: text,
      'aria-label': 'the new key',
      spellcheck: 'false',
    });
    const copy = h('button', { type: 'button', id: 'key-copy' }, 'Copy');
    const copied = h('span', { class: 'acct-hint', role: 'status' });
    copy.addEventListener('click', () => {
      copyText(field)
        .then(() => setText(copied, 'Copied.'))
        .catch(() => setText(copied, 'Select the text and copy it by hand.'));
    });
    const done = h('button', { type: 'button', id: 'key-done' }, 'Done');
    done.addEventListener('click', () => this.hideCreated());
    this.created.replaceChildren(
      h(
        'p',
        { class: 'acct-warning', id: 'key-warning' },
        'Copy this key now. It is shown only once: the broker keeps a hash of it and cannot show it again.',
      ),
      h('div', { class: 'acct-row' }, field, copy, done),
      copied,
    );
    this.created.hidden = false;
    field.select();
  }

  private hideCreated(): void {
    this.created.replaceChildren();
    this.created.hidden = true;
  }

  private say(text: string, kind: 'ok' | 'error'): void {
    this.status.dataset.kind = kind;
    setText(this.status, text);
  }
}

/** The clipboard API needs a secure context (https, localhost); elsewhere the selected field is copied. */
export async function copyText(field: HTMLInputElement): Promise<void> {
  if (navigator.clipboard !== undefined && window.isSecureContext) {
    await navigator.clipboard.writeText(field.value);
    return;
  }
  field.select();
  if (!document.execCommand('copy')) throw new Error('copy refused');
}
