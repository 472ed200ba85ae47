// The Account dialog: who is signed in, the organisation's API keys, members and invitations (admins) and the PIN
// claim form (operators and admins). A chunk of its own (loaded with the first click on Account, by account-panel.ts), like the
// history view and the console: the card grid's first paint carries none of it.
import type { AccountContext } from './account-rest.ts';
import { h, setText } from './dom.ts';
import { InviteForm } from './invite-form.ts';
import { KeysPage } from './keys-page.ts';
import { MembersPage } from './members-page.ts';
import { PinClaim } from './pin-claim.ts';

export interface Identity {
  user: string;
  role: string;
  /** The organisation's name, or a phrase for a system-wide token. */
  org: string;
}

export class AccountDialog {
  readonly el: HTMLElement;
  private readonly who = h('p', { class: 'acct-who', id: 'account-identity' });
  private readonly keys: KeysPage;
  private readonly pins: PinClaim;
  private readonly invite: InviteForm;
  private readonly members: MembersPage;
  private readonly errors = h('p', { class: 'acct-status', role: 'alert', 'data-kind': 'error' });

  constructor(ctx: AccountContext) {
    this.keys = new KeysPage(ctx);
    this.pins = new PinClaim(ctx);
    this.invite = new InviteForm(ctx);
    this.members = new MembersPage(ctx);
    const close = h('button', { type: 'button', class: 'acct-close', 'aria-label': 'close' }, '✕');
    close.addEventListener('click', () => this.close());
    const dialog = h(
      'div',
      { class: 'overlay-panel acct-dialog', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'account-title' },
      h('header', { class: 'acct-head' }, h('h2', { id: 'account-title' }, 'Account'), close),
      this.who,
      this.errors,
      this.pins.el,
      this.keys.el,
      this.invite.el,
      this.members.el,
    );
    this.el = h('div', { class: 'overlay acct-overlay', id: 'account-dialog', hidden: true }, dialog);
    this.el.addEventListener('click', (ev) => {
      if (ev.target === this.el) this.close();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !this.el.hidden) this.close();
    });
  }

  open(id: Identity): void {
    setText(this.who, `Signed in as ${[id.user, id.org, id.role].filter((x) => x !== '').join(' · ')}`);
    setText(this.errors, '');
    const admin = id.role === 'admin';
    const operator = admin || id.role === 'operator';
    this.keys.el.hidden = !admin;
    this.invite.el.hidden = !admin;
    this.members.el.hidden = !admin;
    this.pins.el.hidden = !operator;
    this.el.hidden = false;
    const loads: Promise<void>[] = [];
    if (admin) loads.push(this.keys.load(), this.invite.load(), this.members.load());
    if (operator) loads.push(this.pins.load());
    Promise.all(loads).catch((err: unknown) =>
      setText(this.errors, `Could not load: ${err instanceof Error ? err.message : String(err)}`),
    );
  }

  close(): void {
    this.el.hidden = true;
    // A key text (or an invitation link) must not wait on screen for the next person.
    this.keys.reset();
    this.invite.reset();
  }

  /** Sign-out or another token: nothing of the previous user stays. */
  reset(): void {
    this.close();
    this.pins.reset();
    this.members.reset();
  }
}
