// The page's side of accounts: the sign-in form (user name and password; the password goes into one request and
// is cleared from the field at once), the header's "who is signed in" with the Account button, and the session
// (account-session.ts) that keeps the access token fresh. The Account dialog (keys, PIN claim) is a chunk loaded
// with the first click. The pasted token and #token= links stay in app.ts and auth.ts, unchanged.
import './accounts.css';
import type { AccountDialog, Identity } from './account-dialog.ts';
import { type AccountContext, failureText, listOrgs } from './account-rest.ts';
import { AccountSession } from './account-session.ts';
import { tokenClaims } from './auth.ts';
import { h, setText } from './dom.ts';

export interface AccountPanelDeps {
  /** The broker's HTTP base (http://host:port). */
  base: string;
  /** Where the dialog goes. */
  root: HTMLElement;
  /** The token the page uses now (signed in, pasted or from a link). */
  token(): string | undefined;
  /** Sign-in succeeded: the page connects with this token (and stores it nowhere). */
  signedIn(token: string): void;
  /**
   * A renewed (or resumed) token: used from now on, by REST at once and by the WebSocket at its next connection;
   * a page that is not connected (at load, after a 4401) connects with it.
   */
  renewed(token: string): void;
  /** The session is over: the page shows the sign-in form (which says why). */
  ended(): void;
}

export class AccountPanel {
  /** The sign-in form, for the page's login area. */
  readonly form: HTMLFormElement;
  /** "user · org" and the Account button, for the header. */
  readonly header: HTMLElement;
  private readonly session: AccountSession;
  private readonly user = h('input', {
    type: 'text',
    id: 'signin-user',
    autocomplete: 'username',
    spellcheck: 'false',
    'aria-label': 'user name',
  });
  private readonly password = h('input', {
    type: 'password',
    id: 'signin-password',
    autocomplete: 'current-password',
    'aria-label': 'password',
  });
  private readonly submit = h('button', { type: 'submit', id: 'signin-submit', class: 'primary' }, 'Sign in');
  private readonly message = h('p', { class: 'login-message', id: 'signin-message', role: 'alert' });
  private readonly who = h('span', { class: 'acct-badge', id: 'account-who' });
  private readonly openButton = h('button', { type: 'button', id: 'account-open', hidden: true }, 'Account');
  private identity?: Identity;
  /** The token `identity` was worked out for (its org name costs a request). */
  private identified?: string;
  private dialog?: AccountDialog;
  private loading?: Promise<AccountDialog>;
  private readonly ctx: AccountContext;

  constructor(private readonly deps: AccountPanelDeps) {
    this.ctx = {
      base: deps.base,
      token: deps.token,
      org: () => {
        const t = deps.token();
        const org = t === undefined ? undefined : tokenClaims(t)?.org;
        return typeof org === 'string' ? org : undefined;
      },
    };
    this.session = new AccountSession(deps.base, {
      token: (t) => deps.renewed(t),
      ended: (why) => {
        this.forget();
        setText(this.message, why);
        deps.ended();
      },
    });
    this.form = h(
      'form',
      { class: 'login-box', id: 'signin' },
      h('h2', {}, 'Sign in'),
      this.message,
      h('label', { for: 'signin-user' }, 'User name'),
      this.user,
      h('label', { for: 'signin-password' }, 'Password'),
      this.password,
      h('div', { class: 'login-actions' }, this.submit),
    );
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.signIn();
    });
    this.openButton.addEventListener('click', () => this.open());
    this.header = h('span', { class: 'acct-header' }, this.who, this.openButton);
  }

  /** True while a signed-in session (not a pasted token) supplies the token. */
  get active(): boolean {
    return this.session.active;
  }

  focus(): void {
    this.user.focus();
  }

  /** At page load, with no pasted token: the token of a session this browser opened before, if any. */
  resume(): Promise<string | undefined> {
    return this.session.resume();
  }

  /** The WebSocket was closed with 4401 (token expired or revoked): a fresh token, or a rejection. */
  freshToken(): Promise<string> {
    return this.session.refresh();
  }

  /** The Log out button, or another credential: the broker revokes the refresh cookie (in the background). */
  signOut(): void {
    this.forget();
    this.session.signOut().catch(() => undefined); // it reports its own failure
  }

  /** Who the broker says the page is (`hello`): shown in the header, with Account for operators and admins. */
  identify(role: string): void {
    const token = this.deps.token();
    const claims = token === undefined ? undefined : tokenClaims(token);
    const user = typeof claims?.sub === 'string' ? claims.sub : 'anonymous';
    const orgId = typeof claims?.org === 'string' ? claims.org : undefined;
    // A token without an org claim is system-wide: a system admin's session says so; a `mycelium token` token
    // (a hub without accounts) has no organisations to name.
    const identity: Identity = {
      user,
      role,
      org: orgId !== undefined ? '…' : this.session.active ? 'all organisations' : '',
    };
    this.identity = identity;
    this.openButton.hidden = role !== 'operator' && role !== 'admin';
    this.showWho();
    if (orgId === undefined || token === this.identified) return;
    this.identified = token;
    listOrgs(this.ctx)
      .then((orgs) => {
        identity.org = orgs.find((o) => o.id === orgId)?.name ?? orgId;
        this.showWho();
      })
      .catch(() => {
        identity.org = orgId; // no accounts service: the id is all there is
        this.showWho();
      });
  }

  /** Another credential takes over (a pasted token, a link) or the user signed out: nothing of the last one stays. */
  forget(): void {
    this.identity = undefined;
    this.identified = undefined;
    this.openButton.hidden = true;
    setText(this.who, '');
    this.dialog?.reset();
  }

  private showWho(): void {
    const id = this.identity;
    setText(this.who, id === undefined ? '' : id.org === '' ? id.user : `${id.user} · ${id.org}`);
  }

  /** Signs in with these credentials (the form, or a just-accepted invitation); rejects with the broker's refusal. */
  async signInWith(username: string, password: string): Promise<void> {
    const token = await this.session.signIn(username, password);
    this.forget();
    this.deps.signedIn(token);
  }

  private signIn(): void {
    const username = this.user.value.trim();
    const password = this.password.value;
    // The password leaves the field at once: it lives only in this one request.
    this.password.value = '';
    if (username === '' || password === '') {
      setText(this.message, 'Enter your user name and password.');
      return;
    }
    this.submit.disabled = true;
    setText(this.message, '');
    this.signInWith(username, password)
      .catch((err: unknown) => {
        setText(this.message, `Not signed in: ${failureText(err)}`);
        this.password.focus();
      })
      .finally(() => {
        this.submit.disabled = false;
      });
  }

  private open(): void {
    const id = this.identity;
    if (id === undefined) return;
    this.load()
      .then((dialog) => dialog.open(id))
      .catch((err: unknown) => console.warn('mycelium: the account dialog did not load', err));
  }

  private load(): Promise<AccountDialog> {
    this.loading ??= import('./account-dialog.ts').then(({ AccountDialog }) => {
      const dialog = new AccountDialog(this.ctx);
      this.deps.root.append(dialog.el);
      this.dialog = dialog;
      return dialog;
    });
    // A failed load (a network blip fetching the chunk) may be retried by the next click.
    this.loading.catch(() => {
      this.loading = undefined;
    });
    return this.loading;
  }
}
