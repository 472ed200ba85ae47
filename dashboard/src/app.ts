// The page: header, login, card grid, and the frame loop that applies broker frames to the model at once but
// touches the DOM only once per animation frame (so 1,000 nodes updating every second stay smooth).
import { type BrokerToClientMessage, canWrite, type Json, type Role } from '../../services/protocol/messages.ts';
import { forgetToken, loadToken, saveToken, takeFromFragment, takeTokenFromFragment, tokenExpired } from './auth.ts';
import { AccountPanel } from './account-panel.ts'; // [accounts-ui]
import { Card } from './card.ts';
import { loadChartTheme } from './chart.ts';
import { BrokerConnection, type ConnectionState } from './connection.ts';
import { CONSOLE_RESOURCE, ConsoleClient } from './console-client.ts';
import { ConsoleOpener } from './console-opener.ts';
import { h, setText } from './dom.ts';
import { ChartBackfill } from './chart-backfill.ts';
import { brokerHttpBase, HistoryClient } from './history-client.ts';
import { HistoryOpener } from './history-opener.ts';
import { GatewaysPage } from './gateways.ts';
import { RulesOpener } from './rules-opener.ts';
import { configureTiles } from './map.ts';
import { applyFrame, type NodeModel } from './model.ts';
import { loadSettings, saveSettings } from './settings.ts';
import { HEADER_RESOURCES } from './widgets.ts';

export interface PageConfig {
  brokerUrl: string;
  title: string;
  tileUrl: string;
}

/** How long the page waits for a write's result before saying so (the broker's own limit is 10 s). */
export const WRITE_RESULT_TIMEOUT_MS = 15_000;
/** DOM work per frame for building new cards; values of existing cards are always applied. */
export const FRAME_BUDGET_MS = 8;

/** The resources pyaiot's navbar offers, shown in the filter even before a node reports them. */
const KNOWN_RESOURCES = [
  'led',
  'temperature',
  'pressure',
  'humidity',
  'illuminance',
  'eco2',
  'tvoc',
  'imu',
  'text',
  'position',
  'robot',
  'vendor',
  'version',
];

interface PendingWrite {
  el: HTMLElement;
  timer: number;
}

export class App {
  private readonly settings = loadSettings();
  private nodes = new Map<string, NodeModel>();
  /** Frames of a snapshot being received: applied to a fresh model, swapped in on `synced`. */
  private staging?: Map<string, NodeModel>;
  private readonly cards = new Map<string, Card>();
  private readonly ordered: Card[] = [];
  /** uid → whole node (true) or the endpoints that changed. */
  private readonly dirty = new Map<string, true | Set<string>>();
  private readonly onScreen = new Set<Card>();
  private frameRequested = false;
  private filterDirty = false;
  private role?: Role;
  private token?: string;
  private readonly pending = new Map<string, PendingWrite>();
  private writeSeq = 0;
  private readonly conn: BrokerConnection;
  private readonly observer: IntersectionObserver;
  private readonly hidden: Set<string>;
  private readonly knownResources = new Set(KNOWN_RESOURCES);
  private readonly history: HistoryOpener;
  /** Card charts' last hour, fetched as cards come on screen. */
  private readonly backfill: ChartBackfill;
  /** [console] The device console (issue 12): requests and their frames, and the panel. */
  private readonly consoleClient: ConsoleClient;
  private readonly consolePanel: ConsoleOpener;
  /** [accounts-ui] Sign-in with a password, the renewed token, who is signed in, the Account dialog. */
  private readonly account: AccountPanel;

  /** The Gateways page, and which page is shown. */
  private readonly gateways: GatewaysPage;
  private view: 'nodes' | 'gateways' | 'rules' = 'nodes';
  /** [rules] The Rules page, a chunk loaded with its first open. */
  private readonly rules: RulesOpener;
  private readonly navRules = h(
    'button',
    { type: 'button', id: 'nav-rules', class: 'nav', 'aria-pressed': 'false' },
    'Rules',
  );
  private readonly navNodes = h(
    'button',
    { type: 'button', id: 'nav-nodes', class: 'nav', 'aria-pressed': 'true' },
    'Nodes',
  );
  private readonly navGateways = h(
    'button',
    { type: 'button', id: 'nav-gateways', class: 'nav', 'aria-pressed': 'false' },
    'Gateways',
  );

  // Elements
  private readonly grid = h('main', { class: 'grid', id: 'grid' });
  private readonly empty = h('div', { class: 'empty' }, 'Waiting for nodes…');
  private readonly connPill = h('span', { class: 'conn', id: 'conn', role: 'status' });
  private readonly roleBadge = h('span', { class: 'role', id: 'role' });
  private readonly counts = h('span', { class: 'counts', id: 'counts' });
  private readonly search = h('input', {
    type: 'search',
    id: 'search',
    placeholder: 'Search nodes',
    'aria-label': 'search nodes',
  });
  private readonly statusFilter = h('select', { id: 'status-filter', 'aria-label': 'show nodes' });
  private readonly resourcesButton = h(
    'button',
    { type: 'button', id: 'resources-button', 'aria-expanded': 'false' },
    'Resources',
  );
  private readonly resourcesPanel = h('div', { class: 'panel', id: 'resources-panel', hidden: true });
  private readonly themeButton = h('button', { type: 'button', id: 'theme-button', title: 'switch theme' });
  private readonly logoutButton = h('button', { type: 'button', id: 'logout', title: 'forget the token' }, 'Log out');
  private readonly login = h('div', { class: 'login', id: 'login', hidden: true });
  private readonly loginMessage = h('p', { class: 'login-message', id: 'login-message', role: 'alert' });
  private readonly tokenInput = h('textarea', {
    id: 'token-input',
    rows: '4',
    placeholder: 'eyJhbGciOiJFZERTQSIs…',
    spellcheck: 'false',
    'aria-label': 'token',
  });
  private readonly rememberBox = h('input', { type: 'checkbox', id: 'remember' });

  constructor(
    private readonly root: HTMLElement,
    private readonly config: PageConfig,
  ) {
    this.hidden = new Set(this.settings.hidden);
    this.conn = new BrokerConnection(config.brokerUrl, {
      state: (s) => this.onConnectionState(s),
      message: (m) => this.onMessage(m),
      invalid: (reason) => console.warn('mycelium: frame refused:', reason),
      tokenEnded: () => this.accountTokenEnded(), // [accounts-ui]
    });
    this.observer = new IntersectionObserver((entries) => this.onIntersect(entries), { rootMargin: '200px' });
    this.history = new HistoryOpener(root, { brokerUrl: config.brokerUrl, token: () => this.token });
    this.backfill = new ChartBackfill(new HistoryClient(config.brokerUrl, () => this.token));
    // [console] The console's frames go through the page's one connection.
    this.consoleClient = new ConsoleClient((frame) => this.conn.send(frame));
    this.consolePanel = new ConsoleOpener(root, this.consoleClient);
    this.rules = new RulesOpener({ brokerUrl: config.brokerUrl, token: () => this.token });
    // [accounts-ui]
    this.account = new AccountPanel({
      base: brokerHttpBase(config.brokerUrl),
      root,
      token: () => this.token,
      signedIn: (token) => {
        forgetToken(); // a pasted token stored before must not come back on reload
        this.conn.stop();
        this.clearAll();
        this.connectWith(token);
      },
      renewed: (token) => {
        this.token = token;
        if (this.conn.idle) this.connectWith(token);
        else this.conn.setToken(token);
      },
      ended: () => {
        this.token = undefined;
        this.conn.stop();
        this.clearAll();
        this.showLogin(''); // the sign-in form says why
      },
    });
    this.gateways = new GatewaysPage({
      act: (gateway, name, args, id) => this.conn.send({ type: 'gateway-action', id, gateway, name, args }),
    });
  }

  start(): void {
    document.title = this.config.title;
    configureTiles(this.config.tileUrl);
    this.buildLayout();
    this.applyTheme();
    // A #token= link opened in a tab that already shows the page changes only the fragment: no reload.
    window.addEventListener('hashchange', () => {
      const token = takeTokenFromFragment();
      if (token) this.useToken(token, false);
      const invitation = takeFromFragment('invite'); // [invites-ui]
      if (invitation) {
        this.account.signOut(); // the invited person signs in as themself
        this.conn.stop();
        this.clearAll();
        this.showInvitation(invitation);
      }
    });
    // [invites-ui] An invitation link: the accept form first; nothing connects until the person signed in.
    const invitation = takeFromFragment('invite');
    if (invitation) {
      this.showInvitation(invitation);
      return;
    }
    this.connectAtStart();
  }

  /** The page's first connection: a #token= link, a stored token, a resumed session, or none. */
  private connectAtStart(): void {
    const fromLink = takeTokenFromFragment();
    if (fromLink) saveToken(fromLink, false);
    const given = fromLink ?? loadToken();
    if (given !== undefined) {
      if (fromLink) this.account.signOut(); // [accounts-ui] a link replaces a signed-in session
      this.connectWith(given);
      return;
    }
    // [accounts-ui] No pasted token: a browser that signed in before resumes from its refresh cookie (the
    // `renewed` handler connects with the token); otherwise the page connects without one, as before.
    this.account
      .resume()
      .then((token) => {
        if (token === undefined) this.connectWith(undefined);
      })
      .catch(() => this.connectWith(undefined));
  }

  /** [invites-ui] The invitation's accept form (a chunk) in the login area, in place of the sign-in forms. */
  private showInvitation(invitation: string): void {
    this.token = undefined;
    import('./invite-accept.ts')
      .then(({ InviteAccept }) => {
        const form = new InviteAccept(invitation, {
          base: brokerHttpBase(this.config.brokerUrl),
          signIn: (user, password) => this.account.signInWith(user, password),
          close: (message) => {
            delete this.login.dataset.invite;
            if (this.token !== undefined) return; // signed in: connected already
            if (message === '') this.connectAtStart();
            else this.showLogin(message);
          },
        });
        this.login.querySelector('#invite-accept')?.remove(); // a second link replaces the first
        this.login.dataset.invite = '';
        this.login.prepend(form.el);
        this.showLogin('');
        form.focus();
      })
      .catch((err: unknown) => {
        console.warn('mycelium: the invitation form did not load', err);
        this.showLogin('The invitation form did not load. Reload the page with the link.');
      });
  }

  /** [accounts-ui] A session closed with 4401: a signed-in page renews its token and reconnects at once. */
  private accountTokenEnded(): boolean {
    if (!this.account.active) return false;
    // The connection is idle from now on: `renewed` connects with the new token (now, or after a retry when the
    // broker is unreachable); a refused refresh calls `ended`, which shows the sign-in form.
    this.account.freshToken().catch(() => undefined);
    return true;
  }

  private useToken(token: string, remember: boolean): void {
    this.account.signOut(); // [accounts-ui] a pasted token replaces a signed-in session
    saveToken(token, remember);
    this.conn.stop();
    this.clearAll();
    this.connectWith(token);
  }

  private connectWith(token: string | undefined): void {
    this.token = token;
    if (token && tokenExpired(token)) {
      this.conn.stop();
      this.showLogin('Your token has expired. Paste a new one.');
      return;
    }
    this.login.hidden = true;
    this.conn.start(token);
  }

  // -----------------------------------------------------------------------------------------
  // Layout

  private buildLayout(): void {
    const s = this.settings;
    for (const [value, label] of [
      ['all', 'All nodes'],
      ['online', 'Online'],
      ['offline', 'Offline'],
    ] as const) {
      this.statusFilter.append(h('option', { value, selected: s.status === value }, label));
    }
    this.search.value = s.query;
    this.search.addEventListener('input', () => {
      s.query = this.search.value;
      this.filtersChanged();
    });
    this.statusFilter.addEventListener('change', () => {
      s.status = this.statusFilter.value as typeof s.status;
      this.filtersChanged();
    });
    this.resourcesButton.addEventListener('click', () => this.toggleResourcesPanel());
    this.navNodes.addEventListener('click', () => this.show('nodes'));
    this.navGateways.addEventListener('click', () => this.show('gateways'));
    this.navRules.addEventListener('click', () => this.show('rules'));
    this.themeButton.addEventListener('click', () => {
      s.theme = s.theme === 'dark' ? 'light' : 'dark';
      saveSettings(s);
      this.applyTheme();
    });
    this.logoutButton.addEventListener('click', () => {
      this.account.signOut(); // [accounts-ui] the broker revokes the refresh cookie
      forgetToken();
      this.token = undefined;
      this.history.close();
      this.conn.stop();
      this.clearAll();
      this.showLogin('Logged out.');
    });

    const form = h(
      'form',
      { class: 'login-box' },
      h('h2', {}, 'Or use a token'),
      this.loginMessage,
      h('label', { for: 'token-input' }, 'Paste a token (mycelium token --role viewer)'),
      this.tokenInput,
      h('label', { class: 'check' }, this.rememberBox, ' Remember on this device'),
      h(
        'div',
        { class: 'login-actions' },
        h('button', { type: 'submit', id: 'login-submit', class: 'primary' }, 'Connect'),
      ),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = this.tokenInput.value.trim();
      if (!token) return;
      this.tokenInput.value = '';
      this.useToken(token, this.rememberBox.checked);
    });
    this.login.append(this.account.form, form); // [accounts-ui] password sign-in first, the token below

    const header = h(
      'header',
      { class: 'top' },
      h('div', { class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }), h('h1', {}, this.config.title)),
      h('nav', { class: 'views', 'aria-label': 'pages' }, this.navNodes, this.navGateways, this.navRules),
      this.connPill,
      this.roleBadge,
      this.account.header, // [accounts-ui] who is signed in, and the Account button
      this.counts,
      h('div', { class: 'spacer' }),
      this.search,
      this.statusFilter,
      h('div', { class: 'popover' }, this.resourcesButton, this.resourcesPanel),
      this.themeButton,
      this.logoutButton,
    );
    this.root.replaceChildren(header, this.login, this.empty, this.grid, this.gateways.el, this.rules.el);
  }

  /** Switches between the Nodes, Gateways and Rules pages (the node filters stay in the header, for Nodes). */
  private show(view: 'nodes' | 'gateways' | 'rules'): void {
    this.view = view;
    const nodes = view === 'nodes';
    this.navNodes.setAttribute('aria-pressed', String(nodes));
    this.navGateways.setAttribute('aria-pressed', String(view === 'gateways'));
    this.navRules.setAttribute('aria-pressed', String(view === 'rules'));
    this.grid.hidden = !nodes;
    this.gateways.el.hidden = view !== 'gateways';
    if (view === 'rules') this.rules.show();
    else this.rules.hide();
    for (const el of [this.search, this.statusFilter, this.resourcesButton]) el.hidden = !nodes;
    this.updateCounts();
  }

  private applyTheme(): void {
    document.documentElement.dataset.theme = this.settings.theme;
    setText(this.themeButton, this.settings.theme === 'dark' ? '☀' : '☾');
    this.themeButton.setAttribute('aria-label', this.settings.theme === 'dark' ? 'light theme' : 'dark theme');
    loadChartTheme();
    for (const card of this.cards.values()) card.invalidateCharts();
    this.schedule();
  }

  private toggleResourcesPanel(): void {
    const open = this.resourcesPanel.hidden;
    this.resourcesPanel.hidden = !open;
    this.resourcesButton.setAttribute('aria-expanded', String(open));
    if (!open) return;
    const names = [...this.knownResources].filter((n) => !HEADER_RESOURCES.has(n)).sort();
    this.resourcesPanel.replaceChildren(
      h('div', { class: 'panel-title' }, 'Resources shown'),
      ...names.map((name) => {
        const box = h('input', { type: 'checkbox', checked: !this.hidden.has(name), 'data-resource': name });
        box.addEventListener('change', () => {
          if (box.checked) this.hidden.delete(name);
          else this.hidden.add(name);
          this.settings.hidden = [...this.hidden];
          saveSettings(this.settings);
          for (const card of this.cards.values()) card.applyHidden();
        });
        return h('label', { class: 'check' }, box, ` ${name}`);
      }),
    );
  }

  private filtersChanged(): void {
    saveSettings(this.settings);
    this.filterDirty = true;
    this.schedule();
  }

  private showLogin(message: string): void {
    setText(this.loginMessage, message);
    this.login.hidden = false;
    this.account.focus(); // [accounts-ui]
  }

  // -----------------------------------------------------------------------------------------
  // Connection and frames

  private onConnectionState(s: ConnectionState): void {
    if (s.kind === 'open') {
      this.staging = new Map();
      this.gateways.beginSnapshot();
    }
    const text = {
      connecting: 'Connecting…',
      open: this.staging ? 'Syncing…' : 'Live',
      retrying: s.kind === 'retrying' ? `Reconnecting in ${Math.ceil(s.inMs / 1000)} s` : '',
      refused: 'Token refused',
      stopped: 'Disconnected',
    }[s.kind];
    setText(this.connPill, text);
    this.connPill.dataset.state = s.kind;
    // [console] The broker drops a client's requests with its connection: they end here too.
    if (s.kind !== 'open') this.consoleClient.disconnected();
    if (s.kind === 'refused') {
      const expired = this.token !== undefined && tokenExpired(this.token);
      this.showLogin(
        this.token === undefined
          ? 'This broker needs a token.'
          : expired
            ? 'The broker refused the token: it has expired. Paste a new one.'
            : 'The broker refused the token (invalid, expired or revoked). Paste a new one.',
      );
    }
  }

  private onMessage(msg: BrokerToClientMessage): void {
    switch (msg.type) {
      case 'hello':
      case 'token-ok': // [ws-renew] a renewed token taken on the open socket may carry another role
        if (msg.type === 'token-ok' && this.role === msg.role) return;
        if (this.role !== msg.role) {
          // Write controls depend on the role: rebuild every card for the new one.
          this.role = msg.role;
          this.clearCards();
        }
        setText(this.roleBadge, msg.role);
        this.roleBadge.dataset.role = msg.role;
        this.account.identify(msg.role); // [accounts-ui]
        this.gateways.setCanAct(canWrite(msg.role));
        this.rules.setAdmin(msg.role === 'admin');
        return;
      case 'synced':
        this.swapSnapshot();
        this.gateways.endSnapshot();
        setText(this.connPill, 'Live');
        return;
      case 'result':
        return this.showResult(msg.id, msg.result, msg.reason);
      case 'error':
        if (msg.id !== undefined) {
          if (!this.gateways.failed(msg.id, msg.reason)) this.showResult(msg.id, 'error', msg.reason);
        } else console.warn('mycelium: broker error', msg.code, msg.reason);
        return;
      case 'gateway':
        return this.gateways.apply(msg);
      case 'gateway-gone':
        return this.gateways.remove(msg.id);
      case 'action-result':
        return this.gateways.result(msg);
      case 'exec-output': // [console] frames of a console request (issue 12): the console panel's
      case 'exec-exit':
        return this.consoleClient.frame(msg);
      default: {
        if (msg.type === 'update') this.knownResources.add(msg.endpoint.replace(/^\/+/, ''));
        const target = this.staging ?? this.nodes;
        const change = applyFrame(target, msg, Date.now());
        if (change === undefined || target !== this.nodes) return;
        this.history.frame(msg);
        if (msg.type === 'new' && msg.status === 'online') this.undismiss(msg.uid);
        if (msg.type === 'reset') this.cards.get(msg.uid)?.invalidateCharts();
        this.markDirty(
          change.uid,
          change.all ? undefined : 'endpoint' in change ? change.endpoint : undefined,
          change.all,
        );
      }
    }
  }

  /** The snapshot replaces the old picture in one step, so the screen never flashes empty on reconnect. */
  private swapSnapshot(): void {
    const next = this.staging;
    this.staging = undefined;
    if (next === undefined) return;
    for (const uid of this.nodes.keys()) if (!next.has(uid)) this.removeCard(uid);
    this.nodes = next;
    // Dismissed nodes the broker has forgotten will never come back: drop them from storage too.
    let pruned = false;
    for (const uid of Object.keys(this.settings.dismissed)) {
      if (!next.has(uid)) {
        delete this.settings.dismissed[uid];
        pruned = true;
      }
    }
    if (pruned) saveSettings(this.settings);
    for (const node of next.values()) {
      if (node.status === 'online') this.undismiss(node.uid);
      this.markDirty(node.uid, undefined, true);
    }
  }

  private markDirty(uid: string, endpoint: string | undefined, all: boolean): void {
    // [console] An open console panel follows its agent's command list (an agent restarted with other commands).
    if (all || endpoint === CONSOLE_RESOURCE) {
      this.consolePanel.nodeChanged(uid, this.nodes.get(uid)?.values.get(CONSOLE_RESOURCE));
    }
    const cur = this.dirty.get(uid);
    if (all) this.dirty.set(uid, true);
    else if (cur === undefined) this.dirty.set(uid, new Set(endpoint === undefined ? [] : [endpoint]));
    else if (cur !== true && endpoint !== undefined) cur.add(endpoint);
    this.schedule();
  }

  private schedule(): void {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => this.flush());
  }

  // -----------------------------------------------------------------------------------------
  // The frame loop

  private flush(): void {
    this.frameRequested = false;
    const started = performance.now();
    // Charts first: drawing reads canvas sizes, which is free while layout is clean (nothing has changed the
    // DOM since the last frame) and a forced synchronous layout after the text updates below. Values that
    // arrived for this frame reach the chart one frame later.
    for (const card of this.onScreen) card.drawCharts();
    const q = this.settings.query.trim().toLowerCase();
    const status = this.settings.status;
    for (const [uid, what] of this.dirty) {
      const node = this.nodes.get(uid);
      if (node === undefined) {
        // Removed by an operator: its card goes too.
        this.removeCard(uid);
        this.dirty.delete(uid);
        continue;
      }
      if (this.isDismissed(node)) {
        this.removeCard(uid);
        this.dirty.delete(uid);
        continue;
      }
      let card = this.cards.get(uid);
      if (card === undefined) {
        // Building cards is the expensive part: spread it over frames when many arrive at once.
        if (performance.now() - started > FRAME_BUDGET_MS) continue;
        card = this.createCard(uid);
        card.render(node, true);
      } else if (what === true) {
        card.render(node, true);
      } else {
        card.render(node, false, what);
      }
      this.dirty.delete(uid);
      const name = card.name;
      this.place(card, name);
      card.el.hidden = !card.matches(q, status, node.status === 'online');
    }
    if (this.filterDirty) {
      this.filterDirty = false;
      for (const card of this.cards.values()) {
        const node = this.nodes.get(card.uid);
        if (node) card.el.hidden = !card.matches(q, status, node.status === 'online');
      }
    }
    this.updateCounts();
    if (this.dirty.size > 0 || this.chartsPending()) this.schedule();
  }

  private chartsPending(): boolean {
    for (const card of this.onScreen) if (card.chartsDirty()) return true;
    return false;
  }

  private createCard(uid: string): Card {
    const card = new Card(uid, {
      canWrite: this.role !== undefined && canWrite(this.role),
      write: (u, ep, payload, el) => this.write(u, ep, payload, el),
      dismiss: (u) => this.dismiss(u),
      isHidden: (ep) => this.hidden.has(ep),
      openHistory: (u, ep) => this.openHistory(u, ep),
      backfill: (u, ep, apply) => this.backfill.request(u, ep, apply),
      redraw: () => this.schedule(),
      openConsole: this.role !== undefined && canWrite(this.role) ? (u) => this.openConsole(u) : undefined,
    });
    this.cards.set(uid, card);
    this.observer.observe(card.el);
    return card;
  }

  private openHistory(uid: string, endpoint: string): void {
    const node = this.nodes.get(uid);
    if (node === undefined) return;
    const title = this.cards.get(uid)?.name || uid;
    this.history.open({ uid, endpoint, title, online: node.status === 'online' });
  }

  /** [console] Opens the console panel of an agent with what it advertises now. */
  private openConsole(uid: string): void {
    const node = this.nodes.get(uid);
    const capability = node?.values.get(CONSOLE_RESOURCE);
    if (capability === undefined) return;
    this.consolePanel.open({ uid, title: this.cards.get(uid)?.name || uid, capability, admin: this.role === 'admin' });
  }

  /** Keeps cards sorted by name (then uid): binary search in `ordered`, one DOM move when it changes. */
  private place(card: Card, name: string): void {
    const key = (c: Card) => `${c.name.toLowerCase()}\u0000${c.uid}`;
    const idx = this.ordered.indexOf(card);
    const k = `${name.toLowerCase()}\u0000${card.uid}`;
    if (idx >= 0) {
      const prevOk = idx === 0 || key(this.ordered[idx - 1]) <= k;
      const nextOk = idx === this.ordered.length - 1 || key(this.ordered[idx + 1]) >= k;
      if (prevOk && nextOk && card.el.isConnected) return;
      this.ordered.splice(idx, 1);
    }
    let lo = 0;
    let hi = this.ordered.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (key(this.ordered[mid]) < k) lo = mid + 1;
      else hi = mid;
    }
    this.ordered.splice(lo, 0, card);
    const next = this.ordered[lo + 1];
    this.grid.insertBefore(card.el, next ? next.el : null);
  }

  private removeCard(uid: string): void {
    const card = this.cards.get(uid);
    if (!card) return;
    this.observer.unobserve(card.el);
    this.onScreen.delete(card);
    card.el.remove();
    this.cards.delete(uid);
    const i = this.ordered.indexOf(card);
    if (i >= 0) this.ordered.splice(i, 1);
  }

  private clearCards(): void {
    for (const uid of [...this.cards.keys()]) this.removeCard(uid);
    this.backfill.reset();
    for (const uid of this.nodes.keys()) this.dirty.set(uid, true);
    this.schedule();
  }

  private clearAll(): void {
    this.nodes = new Map();
    this.staging = undefined;
    this.dirty.clear();
    for (const uid of [...this.cards.keys()]) this.removeCard(uid);
    this.backfill.reset();
    this.role = undefined;
    this.consoleClient.disconnected(); // [console]
    this.consolePanel.reset();
    setText(this.roleBadge, '');
    this.account.forget(); // [accounts-ui]
    this.gateways.clear();
    this.rules.reset();
    this.updateCounts();
  }

  private onIntersect(entries: IntersectionObserverEntry[]): void {
    for (const e of entries) {
      const uid = (e.target as HTMLElement).dataset.uid;
      const card = uid === undefined ? undefined : this.cards.get(uid);
      if (!card) continue;
      if (e.isIntersecting) {
        this.onScreen.add(card);
        card.setOnScreen(true);
      } else {
        this.onScreen.delete(card);
        card.setOnScreen(false);
      }
    }
    this.schedule();
  }

  private updateCounts(): void {
    let online = 0;
    let offline = 0;
    for (const n of this.nodes.values()) {
      if (n.status === 'online') online++;
      else if (!this.isDismissed(n)) offline++;
    }
    setText(this.counts, `${online} online · ${offline} offline`);
    this.empty.hidden = this.view !== 'nodes' || this.cards.size > 0;
  }

  // -----------------------------------------------------------------------------------------
  // Dismissing offline nodes

  private isDismissed(node: NodeModel): boolean {
    return node.status === 'offline' && this.settings.dismissed[node.uid] !== undefined;
  }

  private dismiss(uid: string): void {
    const node = this.nodes.get(uid);
    if (!node || node.status === 'online') return;
    this.settings.dismissed[uid] = node.lastSeen;
    saveSettings(this.settings);
    this.markDirty(uid, undefined, true);
  }

  private undismiss(uid: string): void {
    if (this.settings.dismissed[uid] === undefined) return;
    delete this.settings.dismissed[uid];
    saveSettings(this.settings);
  }

  // -----------------------------------------------------------------------------------------
  // Writes

  private write(uid: string, endpoint: string, payload: Json, el: HTMLElement): void {
    // Not crypto.randomUUID(): it only exists on https or localhost, and wall screens often use plain http.
    const id = `w${Date.now().toString(36)}-${(++this.writeSeq).toString(36)}`;
    if (!this.conn.send({ type: 'update', id, data: { uid, endpoint, payload } })) {
      this.setResult(el, 'error', 'not connected');
      return;
    }
    this.setResult(el, 'pending', 'sending…');
    const timer = window.setTimeout(() => {
      this.pending.delete(id);
      this.setResult(el, 'timeout', 'no answer');
    }, WRITE_RESULT_TIMEOUT_MS);
    this.pending.set(id, { el, timer });
  }

  private showResult(id: string, result: string, reason?: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    this.setResult(p.el, result, reason);
  }

  private setResult(el: HTMLElement, result: string, reason?: string): void {
    el.dataset.result = result;
    setText(el, result === 'pending' ? (reason ?? '') : reason ? `${result}: ${reason}` : result);
  }
}
