// The Rules page on demand: the page, its client and its styles are a chunk loaded with the first click on
// "Rules" (and the editor a further one), so the card grid's first paint carries only this opener.
import { h } from './dom.ts';
import type { RulesPage } from './rules-page.ts';

export interface RulesOpenerDeps {
  brokerUrl: string;
  token: () => string | undefined;
}

export class RulesOpener {
  /** Where the page goes once loaded; hidden with it. */
  readonly el = h('div', { class: 'rules-slot', hidden: true });
  private page?: RulesPage;
  private loading?: Promise<RulesPage>;
  private admin = false;

  constructor(private readonly deps: RulesOpenerDeps) {}

  show(): void {
    this.el.hidden = false;
    this.load()
      .then((page) => {
        if (!this.el.hidden) page.show();
      })
      .catch((err: unknown) => console.warn('mycelium: the rules page did not load', err));
  }

  hide(): void {
    this.el.hidden = true;
    this.page?.hide();
  }

  setAdmin(admin: boolean): void {
    this.admin = admin;
    this.page?.setAdmin(admin);
  }

  /** A new token or a logout: the old answers go, and the page (if shown) asks again with the new token. */
  reset(): void {
    this.admin = false;
    this.page?.reset();
    this.page?.setAdmin(false);
    if (!this.el.hidden) this.page?.show();
  }

  private load(): Promise<RulesPage> {
    this.loading ??= import('./rules-page.ts').then(({ RulesPage, RulesClient }) => {
      const page = new RulesPage({ client: new RulesClient(this.deps.brokerUrl, this.deps.token) });
      page.setAdmin(this.admin);
      this.el.append(page.el);
      this.page = page;
      return page;
    });
    // A failed load (a network blip fetching the chunk) may be retried by the next click.
    this.loading.catch(() => {
      this.loading = undefined;
    });
    return this.loading;
  }
}
