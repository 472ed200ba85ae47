// The organisation's members (admins; docs/accounts.md, "Over REST"): the list from `GET /api/v1/users` (never a
// hash), each member's role changed in place (`PUT /api/v1/users/:name/role`), disabled after a confirmation in
// the row or enabled again (`PUT /api/v1/users/:name/disabled`: a disabled user's sessions end within seconds), and
// a form that adds a user with a password (`POST /api/v1/users`). Every string from the broker is set as text.
import { type AccountContext, failureText, listOrgs, rest } from './account-rest.ts';
import { confirmInRow, runBusy } from './account-ui.ts';
import { h, setText } from './dom.ts';

const ROLES = ['viewer', 'operator', 'admin'] as const;

export interface MemberView {
  name: string;
  systemAdmin: boolean;
  disabled: boolean;
  orgs: { org: string; role: string }[];
}

export function parseMember(v: unknown): MemberView | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const u = v as Record<string, unknown>;
  if (typeof u.name !== 'string') return undefined;
  const orgs: MemberView['orgs'] = [];
  for (const m of Array.isArray(u.orgs) ? (u.orgs as unknown[]) : []) {
    const { org, role } = (m ?? {}) as { org?: unknown; role?: unknown };
    if (typeof org === 'string' && typeof role === 'string') orgs.push({ org, role });
  }
  return { name: u.name, systemAdmin: u.systemAdmin === true, disabled: u.disabled === true, orgs };
}

const userPath = (name: string, what: string) => `/api/v1/users/${encodeURIComponent(name)}/${what}`;

export class MembersPage {
  readonly el: HTMLElement;
  private readonly rows = h('tbody', {});
  private readonly status = h('p', { class: 'acct-status', role: 'status', id: 'members-status' });
  private readonly name = h('input', {
    type: 'text',
    id: 'member-name',
    placeholder: 'user name',
    'aria-label': 'user name',
    maxlength: '100',
    autocomplete: 'off',
    spellcheck: 'false',
  });
  private readonly password = h('input', {
    type: 'password',
    id: 'member-password',
    placeholder: 'password (8 or more)',
    'aria-label': 'password',
    autocomplete: 'new-password',
  });
  private readonly role = h('select', { id: 'member-role', 'aria-label': 'role' });
  private readonly org = h('select', { id: 'member-org', 'aria-label': 'organisation', hidden: true });

  constructor(private readonly ctx: AccountContext) {
    for (const r of ROLES) this.role.append(h('option', { value: r }, r));
    const form = h(
      'form',
      { class: 'acct-form', id: 'member-add' },
      this.name,
      this.password,
      this.role,
      this.org,
      h('button', { type: 'submit', class: 'primary', id: 'member-add-submit' }, 'Add user'),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.add().catch((err: unknown) => this.say(`Not added: ${failureText(err)}`, 'error'));
    });
    const table = h(
      'table',
      { class: 'acct-table', id: 'members-table' },
      h('thead', {}, h('tr', {}, ...['Name', 'Role', 'State', ''].map((t) => h('th', {}, t)))),
      this.rows,
    );
    this.el = h(
      'section',
      { class: 'acct-section', id: 'members-page' },
      h('h3', {}, 'Members'),
      h(
        'p',
        { class: 'acct-hint' },
        'A new role applies at the member’s next token renewal; disabling ends their sessions within seconds.',
      ),
      form,
      this.status,
      h('div', { class: 'acct-scroll' }, table),
    );
  }

  async load(): Promise<void> {
    const systemWide = this.ctx.org() === undefined;
    this.org.hidden = !systemWide;
    if (systemWide && this.org.options.length === 0) {
      for (const o of await listOrgs(this.ctx)) this.org.append(h('option', { value: o.name }, o.name));
    }
    await this.refresh();
  }

  reset(): void {
    this.rows.replaceChildren();
    this.org.replaceChildren();
    this.name.value = '';
    this.password.value = '';
    setText(this.status, '');
  }

  private async refresh(): Promise<void> {
    const body = await rest(this.ctx.base, '/api/v1/users', { token: this.ctx.token() });
    const users = (Array.isArray(body.users) ? (body.users as unknown[]) : [])
      .map(parseMember)
      .filter((u): u is MemberView => u !== undefined);
    this.rows.replaceChildren(...users.map((u) => this.row(u)));
    if (users.length === 0) this.rows.append(h('tr', {}, h('td', { colspan: '4', class: 'acct-hint' }, 'No members.')));
  }

  private row(u: MemberView): HTMLTableRowElement {
    const state = u.disabled ? 'disabled' : 'active';
    const action = h('td', { class: 'acct-actions' });
    const toggle = h(
      'button',
      { type: 'button', class: u.disabled ? 'member-enable' : 'member-disable' },
      u.disabled ? 'Enable' : 'Disable',
    );
    toggle.addEventListener('click', () => {
      if (u.disabled) {
        runBusy(
          toggle,
          () => this.setDisabled(u, false),
          (err) => this.say(`Not enabled: ${failureText(err)}`, 'error'),
        );
      } else this.confirmDisable(u, action, toggle);
    });
    action.append(toggle);
    return h(
      'tr',
      { 'data-user': u.name, 'data-state': state, class: u.disabled ? 'member-disabled' : undefined },
      h('td', {}, u.name),
      h('td', {}, this.roleCell(u)),
      h('td', { class: 'member-state' }, u.systemAdmin ? `${state}, system admin` : state),
      action,
    );
  }

  /** One membership: a role choice that applies at once. A system admin, or several organisations: text only. */
  private roleCell(u: MemberView): Node {
    if (u.systemAdmin || u.orgs.length !== 1) {
      return document.createTextNode(u.orgs.map((m) => `${m.org}: ${m.role}`).join(', ') || '–');
    }
    const [m] = u.orgs;
    const select = h('select', { class: 'member-role', 'aria-label': `role of ${u.name}` });
    for (const r of ROLES) select.append(h('option', { value: r, selected: r === m.role }, r));
    select.addEventListener('change', () => {
      const role = select.value;
      select.disabled = true;
      const body: Record<string, unknown> = { role };
      if (this.ctx.org() === undefined) body.org = m.org;
      rest(this.ctx.base, userPath(u.name, 'role'), { method: 'PUT', token: this.ctx.token(), body })
        .then(() => {
          m.role = role;
          this.say(`${u.name} is now ${role} (from their next token renewal).`, 'ok');
        })
        .catch((err: unknown) => {
          select.value = m.role;
          this.say(`Role not changed: ${failureText(err)}`, 'error');
        })
        .finally(() => {
          select.disabled = false;
        });
    });
    return select;
  }

  /** Disabling asks once more in the row (no blocking browser confirm()), like revoking a key. */
  private confirmDisable(u: MemberView, cell: HTMLElement, toggle: HTMLButtonElement): void {
    confirmInRow(cell, toggle, {
      cls: 'member-disable',
      warning: 'Their sessions end. ',
      yes: 'Disable now',
      act: () => this.setDisabled(u, true),
      failed: (err) => this.say(`Not disabled: ${failureText(err)}`, 'error'),
    });
  }

  private async setDisabled(u: MemberView, disabled: boolean): Promise<void> {
    await rest(this.ctx.base, userPath(u.name, 'disabled'), {
      method: 'PUT',
      token: this.ctx.token(),
      body: { disabled },
    });
    this.done(disabled ? `${u.name} disabled: signed out everywhere within seconds.` : `${u.name} enabled.`);
  }

  /** A change made: say so, then reload the list (a failed reload is reported as such, not as a failed change). */
  private done(text: string): void {
    this.say(text, 'ok');
    this.refresh().catch((err: unknown) => this.say(`${text} The list was not reloaded: ${failureText(err)}`, 'error'));
  }

  private async add(): Promise<void> {
    const username = this.name.value.trim();
    const password = this.password.value;
    this.password.value = ''; // the password lives only in the request
    if (username === '' || password === '') throw new Error('enter a user name and a password');
    const body: Record<string, unknown> = { username, password, role: this.role.value };
    if (!this.org.hidden && this.org.value !== '') body.org = this.org.value;
    const answer = await rest(this.ctx.base, '/api/v1/users', { method: 'POST', token: this.ctx.token(), body });
    this.name.value = '';
    this.say(`User ${typeof answer.name === 'string' ? answer.name : username} added.`, 'ok');
    await this.refresh();
  }

  private say(text: string, kind: 'ok' | 'error'): void {
    this.status.dataset.kind = kind;
    setText(this.status, text);
  }
}
