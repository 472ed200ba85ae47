// Accepting an invitation (docs/accounts.md, "Invitations"): the page opened with `#invite=myi_…` (the link in the
// invitation mail; app.ts takes it out of the address bar) shows this form instead of the sign-in: a user name and
// the password twice → `POST /api/v1/invitations/accept`, then the usual sign-in with the same credentials. The
// broker's refusals (used or expired invitation, name taken, weak password) are shown as text. The passwords leave
// their fields at once, as on the sign-in form.
import { failureText, rest } from './account-rest.ts';
import { h, setText } from './dom.ts';

export interface InviteAcceptDeps {
  /** The broker's HTTP base (http://host:port). */
  base: string;
  /** Signs in with the new user's credentials (the sign-in form's flow); rejects with the broker's refusal. */
  signIn(username: string, password: string): Promise<void>;
  /** The form is done with (accepted, or the person has an account already): the page shows its sign-in. */
  close(message: string): void;
}

export class InviteAccept {
  readonly el: HTMLFormElement;
  private readonly user = h('input', {
    type: 'text',
    id: 'invite-user',
    autocomplete: 'username',
    spellcheck: 'false',
    maxlength: '100',
    'aria-label': 'user name',
  });
  private readonly password = h('input', {
    type: 'password',
    id: 'invite-password',
    autocomplete: 'new-password',
    'aria-label': 'password',
  });
  private readonly again = h('input', {
    type: 'password',
    id: 'invite-password2',
    autocomplete: 'new-password',
    'aria-label': 'password again',
  });
  private readonly submit = h(
    'button',
    { type: 'submit', id: 'invite-submit', class: 'primary' },
    'Accept and sign in',
  );
  private readonly message = h('p', { class: 'login-message', id: 'invite-message', role: 'alert' });

  constructor(
    /** The invitation text (`myi_…`); forgotten once spent. */
    private invitation: string,
    private readonly deps: InviteAcceptDeps,
  ) {
    const cancel = h('button', { type: 'button', id: 'invite-cancel' }, 'I have an account');
    cancel.addEventListener('click', () => this.done(''));
    this.el = h(
      'form',
      { class: 'login-box', id: 'invite-accept' },
      h('h2', {}, 'Accept your invitation'),
      h('p', { class: 'acct-hint' }, 'Choose a user name and a password (8 characters or more).'),
      this.message,
      h('label', { for: 'invite-user' }, 'User name'),
      this.user,
      h('label', { for: 'invite-password' }, 'Password'),
      this.password,
      h('label', { for: 'invite-password2' }, 'Password again'),
      this.again,
      h('div', { class: 'login-actions' }, this.submit, cancel),
    );
    this.el.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.accept();
    });
  }

  focus(): void {
    this.user.focus();
  }

  private accept(): void {
    const username = this.user.value.trim();
    const password = this.password.value;
    const again = this.again.value;
    // The passwords leave the fields at once: they live only in the two requests below.
    this.password.value = '';
    this.again.value = '';
    if (username === '' || password === '') {
      setText(this.message, 'Choose a user name and a password.');
      return;
    }
    if (password !== again) {
      setText(this.message, 'The two passwords differ. Type them again.');
      this.password.focus();
      return;
    }
    this.submit.disabled = true;
    setText(this.message, '');
    rest(this.deps.base, '/api/v1/invitations/accept', {
      method: 'POST',
      body: { invitation: this.invitation, username, password },
    })
      .then(async () => {
        this.invitation = ''; // spent
        try {
          await this.deps.signIn(username, password);
          this.done('');
        } catch (err) {
          this.done(`Your account ${username} is ready, but signing in failed: ${failureText(err)}`);
        }
      })
      .catch((err: unknown) => {
        setText(this.message, `Not accepted: ${failureText(err)}`);
        this.user.focus();
      })
      .finally(() => {
        this.submit.disabled = false;
      });
  }

  private done(message: string): void {
    this.invitation = '';
    this.el.remove();
    this.deps.close(message);
  }
}
