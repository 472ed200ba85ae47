// Inviting someone to the organisation (admins; docs/accounts.md, "Invitations"): an email address and a role →
// `POST /api/v1/invitations`. With SMTP on the accounts service the answer says it was mailed (and holds no
// invitation); without, it holds the invitation, and the page shows this page's own link to accept it
// (`<this dashboard>/#invite=myi_…`) once, with a copy button, like a new key. Strings are set as text.
import { type AccountContext, failureText, listOrgs, rest } from './account-rest.ts';
import { formatTime, h, setText } from './dom.ts';
import { copyText } from './keys-page.ts';

/** The link that opens this dashboard's accept form (the invitation in the fragment: no server log sees it). */
export function inviteLink(invitation: string, here: Location = window.location): string {
  return `${here.origin}${here.pathname}#invite=${invitation}`;
}

export class InviteForm {
  readonly el: HTMLElement;
  private readonly email = h('input', {
    type: 'email',
    id: 'invite-email',
    placeholder: 'email address',
    'aria-label': 'email address',
    maxlength: '254',
    autocomplete: 'off',
    spellcheck: 'false',
  });
  private readonly role = h('select', { id: 'invite-role', 'aria-label': 'role' });
  private readonly org = h('select', { id: 'invite-org', 'aria-label': 'organisation', hidden: true });
  private readonly submit = h('button', { type: 'submit', class: 'primary', id: 'invite-send' }, 'Invite');
  private readonly status = h('p', { class: 'acct-status', role: 'status', id: 'invite-status' });
  private readonly made = h('div', { class: 'acct-secret', id: 'invite-made', hidden: true });

  constructor(private readonly ctx: AccountContext) {
    for (const role of ['viewer', 'operator', 'admin']) this.role.append(h('option', { value: role }, role));
    const form = h(
      'form',
      // The broker checks the address and says why it refuses; the browser's own check would stop the form silently.
      { class: 'acct-form', id: 'invite-form', novalidate: true },
      this.email,
      this.role,
      this.org,
      this.submit,
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.invite().catch((err: unknown) => this.say(`Not invited: ${failureText(err)}`, 'error'));
    });
    this.el = h(
      'section',
      { class: 'acct-section', id: 'invite-page' },
      h('h3', {}, 'Invite someone'),
      h(
        'p',
        { class: 'acct-hint' },
        'They get a link to choose a user name and a password; it works once, for 7 days.',
      ),
      form,
      this.made,
      this.status,
    );
  }

  /** A system-wide admin picks the organisation; a member invites to their own. */
  async load(): Promise<void> {
    const systemWide = this.ctx.org() === undefined;
    this.org.hidden = !systemWide;
    if (systemWide && this.org.options.length === 0) {
      for (const o of await listOrgs(this.ctx)) this.org.append(h('option', { value: o.name }, o.name));
    }
  }

  /** Forgets what the previous user saw, above all a link still on screen. */
  reset(): void {
    this.hideMade();
    this.email.value = '';
    this.org.replaceChildren();
    setText(this.status, '');
  }

  private async invite(): Promise<void> {
    const email = this.email.value.trim();
    if (email === '') throw new Error('enter the email address');
    const body: Record<string, unknown> = { email, role: this.role.value };
    if (!this.org.hidden && this.org.value !== '') body.org = this.org.value;
    this.submit.disabled = true;
    this.hideMade();
    try {
      const answer = await rest(this.ctx.base, '/api/v1/invitations', {
        method: 'POST',
        token: this.ctx.token(),
        body,
      });
      const to = typeof answer.email === 'string' ? answer.email : email;
      const until = typeof answer.expiresAt === 'number' ? ` (valid until ${formatTime(answer.expiresAt)})` : '';
      this.email.value = '';
      if (answer.sent === true) {
        this.say(`Invitation sent to ${to}${until}.`, 'ok');
      } else if (typeof answer.invitation === 'string') {
        this.showMade(to, inviteLink(answer.invitation));
        this.say(`No mail server is configured: pass the link to ${to}${until}.`, 'ok');
      } else {
        this.say(`Invitation made for ${to}${until}.`, 'ok');
      }
    } finally {
      this.submit.disabled = false;
    }
  }

  /** The link, this once: in a read-only field with a copy button; Done (or closing the dialog) wipes it. */
  private showMade(to: string, link: string): void {
    const field = h('input', {
      type: 'text',
      id: 'invite-link',
      readonly: true,
      value: link,
      'aria-label': 'the invitation link',
      spellcheck: 'false',
    });
    const copy = h('button', { type: 'button', id: 'invite-copy' }, 'Copy');
    const copied = h('span', { class: 'acct-hint', role: 'status' });
    copy.addEventListener('click', () => {
      copyText(field)
        .then(() => setText(copied, 'Copied.'))
        .catch(() => setText(copied, 'Select the text and copy it by hand.'));
    });
    const done = h('button', { type: 'button', id: 'invite-done' }, 'Done');
    done.addEventListener('click', () => this.hideMade());
    this.made.replaceChildren(
      h(
        'p',
        { class: 'acct-warning' },
        `Send this link to ${to} yourself. It is shown only once and works once: whoever opens it joins.`,
      ),
      h('div', { class: 'acct-row' }, field, copy, done),
      copied,
    );
    this.made.hidden = false;
    field.select();
  }

  private hideMade(): void {
    this.made.replaceChildren();
    this.made.hidden = true;
  }

  private say(text: string, kind: 'ok' | 'error'): void {
    this.status.dataset.kind = kind;
    setText(this.status, text);
  }
}
