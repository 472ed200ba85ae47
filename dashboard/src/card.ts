// One node's card: header (name, OS badge, board, protocol, gateway, status) and one row per resource.
import type { Json } from '../../services/protocol/messages.ts';
import { CONSOLE_RESOURCE } from './console-client.ts';
import { formatTime, h, setText } from './dom.ts';
import { osBadge } from './icons.ts';
import type { NodeModel } from './model.ts';
import { asText } from './values.ts';
import { HEADER_RESOURCES, makeWidget, type Widget, type Writer } from './widgets.ts';

interface Row {
  el: HTMLElement;
  widget: Widget;
  last?: Json;
}

export interface CardDeps {
  canWrite: boolean;
  write: Writer;
  dismiss(uid: string): void;
  isHidden(endpoint: string): boolean;
  /** Opens the resource's history view; without it the resource names are plain labels. */
  openHistory?(uid: string, endpoint: string): void;
  /** Fetches the last hour of a chart's resource (once); `apply` gets the points, oldest first. */
  backfill?(uid: string, endpoint: string, apply: (points: readonly (readonly [number, Json])[]) => void): void;
  /** A chart changed outside a frame (history arrived): draw at the next animation frame. */
  redraw?(): void;
  /** [console] Opens the node's console panel; without it (viewers) agents get no Console button. */
  openConsole?(uid: string): void;
}

const NAME_MAX = 80;

export class Card {
  readonly el: HTMLElement;
  /** Name shown in the title; also the sort key. */
  name = '';
  visible = false;
  /** In the viewport (the grid's IntersectionObserver says). */
  private onScreen = false;
  private readonly title = h('h2', { class: 'card-title' });
  private readonly uidEl = h('div', { class: 'card-uid' });
  private readonly osEl = h('span', { class: 'card-os' });
  private readonly meta = h('div', { class: 'card-meta' });
  private readonly status = h('div', { class: 'card-status' });
  private readonly body = h('div', { class: 'card-body' });
  private readonly discovering = h('div', { class: 'discovering' }, 'Discovering…');
  private readonly dismissButton = h(
    'button',
    { type: 'button', class: 'dismiss', title: 'remove this offline node' },
    'Dismiss',
  );
  private readonly rows = new Map<string, Row>();
  /** [console] Shown on agents (nodes with a `console` resource) for operators and admins. */
  private readonly consoleButton?: HTMLButtonElement;
  private os = '';
  private searchText = '';

  constructor(
    readonly uid: string,
    private readonly deps: CardDeps,
  ) {
    this.el = h(
      'article',
      { class: 'card', 'data-uid': uid },
      h('header', { class: 'card-head' }, h('div', { class: 'card-id' }, this.title, this.uidEl), this.osEl),
      this.meta,
      h('div', { class: 'card-status-row' }, this.status, this.dismissButton),
      this.body,
    );
    setText(this.uidEl, uid);
    const openConsole = deps.openConsole;
    if (openConsole !== undefined) {
      this.consoleButton = h('button', { type: 'button', class: 'card-console', hidden: true }, 'Console');
      this.consoleButton.addEventListener('click', () => openConsole(uid));
      this.dismissButton.before(this.consoleButton);
    }
    this.dismissButton.addEventListener('click', () => deps.dismiss(uid));
    const openHistory = deps.openHistory;
    if (openHistory !== undefined) {
      // One listener per card: a resource name is a button that opens its history.
      this.body.addEventListener('click', (ev) => {
        const name = (ev.target as Element).closest('button.res-name');
        const endpoint = name?.parentElement?.dataset.endpoint;
        if (endpoint !== undefined) openHistory(uid, endpoint);
      });
    }
  }

  /** Brings the card up to date: every resource (`all`), or only the listed ones. */
  render(node: NodeModel, all: boolean, endpoints?: Iterable<string>): void {
    if (all) {
      for (const [ep, row] of this.rows) {
        if (!node.values.has(ep)) {
          row.el.remove();
          this.rows.delete(ep);
        }
      }
      for (const [ep, data] of node.values) this.renderValue(node, ep, data);
    } else if (endpoints !== undefined) {
      for (const ep of endpoints) {
        const data = node.values.get(ep);
        if (data !== undefined) this.renderValue(node, ep, data);
      }
    }
    this.renderHeader(node);
    if (this.consoleButton) this.consoleButton.hidden = !node.values.has(CONSOLE_RESOURCE) || node.status !== 'online';
  }

  /** The header changes rarely; per value only the "seen" time is rewritten (hot path: 1,000 updates/s). */
  private renderHeader(node: NodeModel): void {
    const online = node.status === 'online';
    setText(
      this.status,
      online
        ? `online · seen ${formatTime(node.lastSeen)}`
        : `offline: ${node.reason ?? 'unknown'} at ${formatTime(node.lastSeen)}`,
    );
    const nameValue = node.values.get('name');
    const osValue = node.values.get('os');
    const boardValue = node.values.get('board');
    const discovering = node.discovering && node.values.size === 0;
    if (
      nameValue === this.last.name &&
      osValue === this.last.os &&
      boardValue === this.last.board &&
      node.protocol === this.last.protocol &&
      node.gateway === this.last.gateway &&
      online === this.last.online &&
      discovering === this.last.discovering
    ) {
      return;
    }
    this.last = {
      name: nameValue,
      os: osValue,
      board: boardValue,
      protocol: node.protocol,
      gateway: node.gateway,
      online,
      discovering,
    };
    const name = asText(nameValue ?? '').slice(0, NAME_MAX) || node.uid;
    this.name = name;
    setText(this.title, name);
    const os = asText(osValue ?? '');
    if (os !== this.os) {
      this.os = os;
      this.osEl.replaceChildren(...(os ? [osBadge(os)] : []));
    }
    const meta = [boardValue === undefined ? '' : asText(boardValue), node.protocol ?? '', `via ${node.gateway}`]
      .filter(Boolean)
      .join(' · ');
    setText(this.meta, meta);
    this.el.classList.toggle('offline', !online);
    this.status.classList.toggle('is-online', online);
    this.status.classList.toggle('is-offline', !online);
    this.dismissButton.hidden = online;
    if (discovering && !this.discovering.isConnected) this.body.prepend(this.discovering);
    else if (!discovering && this.discovering.isConnected) this.discovering.remove();
    this.searchText = `${name} ${node.uid} ${os} ${meta}`.toLowerCase();
  }

  /** What the header was last drawn from (values compared by identity: a new frame is a new value). */
  private last: {
    name?: Json;
    os?: Json;
    board?: Json;
    protocol?: string;
    gateway?: string;
    online?: boolean;
    discovering?: boolean;
  } = {};

  private renderValue(node: NodeModel, endpoint: string, data: Json): void {
    if (HEADER_RESOURCES.has(endpoint) || endpoint === CONSOLE_RESOURCE) return;
    let row = this.rows.get(endpoint);
    if (row === undefined) {
      const widget = makeWidget({ uid: node.uid, endpoint, canWrite: this.deps.canWrite, write: this.deps.write });
      const el = h(
        'section',
        { class: 'res', 'data-endpoint': endpoint },
        this.deps.openHistory === undefined
          ? h('div', { class: 'res-name' }, endpoint)
          : h('button', { type: 'button', class: 'res-name', title: `history of ${endpoint}` }, endpoint),
        widget.el,
      );
      el.hidden = this.deps.isHidden(endpoint);
      row = { el, widget };
      this.rows.set(endpoint, row);
      this.insertRow(endpoint, el);
      if (this.onScreen) this.backfillRow(endpoint, widget);
    }
    if (row.last === data) return;
    row.last = data;
    row.widget.set(data, Date.now());
  }

  /** Rows are kept in name order so cards of the same kind look alike. */
  private insertRow(endpoint: string, el: HTMLElement): void {
    for (const child of this.body.children) {
      const ep = (child as HTMLElement).dataset.endpoint;
      if (ep !== undefined && ep > endpoint) {
        this.body.insertBefore(el, child);
        return;
      }
    }
    this.body.append(el);
  }

  /** The card scrolled into view (or out): charts ask for their history the first time it is seen. */
  setOnScreen(onScreen: boolean): void {
    this.onScreen = onScreen;
    if (!onScreen) return;
    for (const [endpoint, row] of this.rows) this.backfillRow(endpoint, row.widget);
    this.invalidateCharts();
  }

  private backfillRow(endpoint: string, widget: Widget): void {
    const backfill = widget.backfill;
    if (backfill === undefined || this.deps.backfill === undefined) return;
    this.deps.backfill(this.uid, endpoint, (points) => {
      backfill.call(widget, points);
      this.deps.redraw?.();
    });
  }

  /** Redraws the charts that changed; only for cards on screen. */
  drawCharts(): void {
    for (const row of this.rows.values()) if (row.widget.dirty && !row.el.hidden) row.widget.draw?.();
  }

  chartsDirty(): boolean {
    for (const row of this.rows.values()) if (row.widget.dirty && !row.el.hidden) return true;
    return false;
  }

  /** Marks every chart for redrawing (theme change, card scrolled into view). */
  invalidateCharts(): void {
    for (const row of this.rows.values()) if (row.widget.draw) row.widget.dirty = true;
  }

  matches(query: string, status: string, online: boolean): boolean {
    if (status === 'online' && !online) return false;
    if (status === 'offline' && online) return false;
    return query === '' || this.searchText.includes(query);
  }

  applyHidden(): void {
    for (const [ep, row] of this.rows) row.el.hidden = this.deps.isHidden(ep);
  }

  endpoints(): Iterable<string> {
    return this.rows.keys();
  }
}
