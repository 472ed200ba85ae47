// The Gateways page (issue 11, item 7; OpenVisualizer's remote GUI): one card per gateway with its counters, a
// sparkline of messages per second and, for operators, its actions. Fed by the broker's `gateway` and
// `gateway-gone` frames (validated by the protocol parser); every string a gateway sent is set as text.
import type {
  ActionArgs,
  Status,
  ToClientActionResult,
  ToClientGateway,
} from '../../services/protocol/gateway-reports.ts';
import { LOG_LEVELS } from '../../services/protocol/gateway-reports.ts';
import { formatTime, h, setText } from './dom.ts';
import { sparkline } from './sparkline.ts';

/** Rates kept per gateway for the sparkline (one per status report). */
export const SPARK_POINTS = 60;
/** How long the page waits for an action's result before saying so (the broker's own limit is 10 s). */
export const ACTION_RESULT_TIMEOUT_MS = 15_000;

export interface GatewaysDeps {
  /** Sends an action over the page's link; false when not connected. */
  act(gateway: string, name: string, args: ActionArgs, id: string): boolean;
}

/** Messages per second between two status reports (in + out); undefined when they cannot be compared. */
export function messageRate(prev: Status | undefined, next: Status): number | undefined {
  if (prev === undefined || next.at <= prev.at) return undefined;
  const delta = next.messages.in + next.messages.out - prev.messages.in - prev.messages.out;
  // Totals restart with the gateway: a drop is a restart, not a negative rate.
  return delta < 0 ? undefined : (delta * 1000) / (next.at - prev.at);
}

function sum(counts: Record<string, number>): number {
  let n = 0;
  for (const k in counts) n += counts[k];
  return n;
}

function duration(seconds: number): string {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

class GatewayCard {
  readonly el: HTMLElement;
  private readonly title = h('h2', { class: 'card-title gw-id' });
  private readonly meta = h('div', { class: 'card-meta gw-meta' });
  private readonly counters = h('dl', { class: 'gw-counters' });
  private readonly errors = h('div', { class: 'gw-errors' });
  private readonly rate = h('span', { class: 'gw-rate' });
  private readonly spark = sparkline();
  private readonly result = h('div', { class: 'write-result gw-result', role: 'status' });
  private readonly rates: number[] = [];
  private last?: Status;
  private readonly values = new Map<string, HTMLElement>();

  constructor(
    readonly id: string,
    canAct: boolean,
    act: (name: string, args: ActionArgs, result: HTMLElement) => void,
  ) {
    setText(this.title, id);
    for (const [key, label] of [
      ['nodes', 'Nodes'],
      ['in', 'Messages in'],
      ['out', 'Messages out'],
      ['errors', 'Errors'],
      ['reconnects', 'Reconnects'],
      ['uptime', 'Uptime'],
      ['lag', 'Event-loop lag'],
    ] as const) {
      const dd = h('dd', { 'data-counter': key }, '–');
      this.values.set(key, dd);
      this.counters.append(h('div', { class: 'gw-counter' }, h('dt', {}, label), dd));
    }
    const actions = h('div', { class: 'gw-actions' });
    if (canAct) {
      const rediscover = h('button', { type: 'button', 'data-action': 'rediscover' }, 'Rediscover all');
      rediscover.addEventListener('click', () => act('rediscover', {}, this.result));
      const uid = h('input', { class: 'write-input gw-uid', placeholder: 'node uid', 'aria-label': 'node uid' });
      const forget = h('button', { type: 'button', 'data-action': 'forget' }, 'Forget node');
      forget.addEventListener('click', () => {
        const u = uid.value.trim();
        if (u) act('forget', { uid: u }, this.result);
      });
      const rediscoverOne = h('button', { type: 'button', 'data-action': 'rediscover-node' }, 'Rediscover node');
      rediscoverOne.addEventListener('click', () => {
        const u = uid.value.trim();
        if (u) act('rediscover', { uid: u }, this.result);
      });
      const level = h('select', { class: 'gw-level', 'aria-label': 'log level' });
      for (const l of LOG_LEVELS) level.append(h('option', { value: l, selected: l === 'info' }, l));
      const setLevel = h('button', { type: 'button', 'data-action': 'set-log-level' }, 'Set log level');
      setLevel.addEventListener('click', () =>
        act('set-log-level', { level: level.value as ActionArgs['level'] }, this.result),
      );
      actions.append(
        rediscover,
        h('div', { class: 'gw-row' }, uid, rediscoverOne, forget),
        h('div', { class: 'gw-row' }, level, setLevel),
        this.result,
      );
    }
    this.el = h(
      'article',
      { class: 'card gw-card', 'data-gateway': id },
      h('header', { class: 'card-head' }, h('div', { class: 'card-id' }, this.title, this.meta)),
      this.counters,
      this.errors,
      h('div', { class: 'gw-spark-row' }, this.spark.el, this.rate),
      actions,
    );
  }

  render(frame: ToClientGateway): void {
    const inv = frame.inventory;
    const parts = inv === undefined ? [] : [inv.protocol, `v${inv.version}`, ...inv.listen];
    parts.push(`via ${frame.broker}`);
    setText(this.meta, parts.join(' · '));
    const s = frame.status;
    if (s === undefined) return;
    if (this.last === undefined || s.at !== this.last.at) {
      const r = messageRate(this.last, s);
      if (r !== undefined) {
        this.rates.push(r);
        if (this.rates.length > SPARK_POINTS) this.rates.shift();
        this.spark.draw(this.rates);
        setText(this.rate, `${r < 10 ? r.toFixed(1) : Math.round(r)} msg/s`);
      }
      this.last = s;
    }
    const nodes = Object.entries(s.nodes)
      .map(([k, v]) => `${v} ${k}`)
      .join(', ');
    this.set('nodes', nodes || '0');
    this.set('in', String(s.messages.in));
    this.set('out', String(s.messages.out));
    this.set('errors', String(sum(s.errors)));
    this.set('reconnects', String(s.reconnects));
    this.set('uptime', duration(s.uptimeS));
    this.set('lag', `${s.eventLoopLagMs} ms`);
    const kinds = Object.entries(s.errors)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 5)
      .map(([k, v]) => `${k} ${v}`);
    setText(this.errors, kinds.length === 0 ? '' : `Errors: ${kinds.join(', ')}`);
    this.el.title = `last report ${formatTime(s.at)}`;
  }

  private set(key: string, text: string): void {
    const el = this.values.get(key);
    if (el) setText(el, text);
  }
}

export class GatewaysPage {
  readonly el = h('main', { class: 'grid gw-grid', id: 'gateways', hidden: true });
  private readonly empty = h('div', { class: 'empty', id: 'gateways-empty' }, 'No gateway has reported yet.');
  private readonly cards = new Map<string, GatewayCard>();
  private readonly pending = new Map<string, { el: HTMLElement; timer: number }>();
  /** Gateways seen in the snapshot being received (the others are gone when it ends). */
  private seen?: Set<string>;
  private seq = 0;
  private canAct = false;

  constructor(private readonly deps: GatewaysDeps) {
    this.el.append(this.empty);
  }

  /** The role decides whether cards have action buttons: rebuilt when it changes. */
  setCanAct(canAct: boolean): void {
    if (canAct === this.canAct) return;
    this.canAct = canAct;
    for (const id of [...this.cards.keys()]) this.remove(id);
  }

  beginSnapshot(): void {
    this.seen = new Set();
  }

  endSnapshot(): void {
    const seen = this.seen;
    this.seen = undefined;
    if (seen === undefined) return;
    for (const id of [...this.cards.keys()]) if (!seen.has(id)) this.remove(id);
  }

  clear(): void {
    for (const id of [...this.cards.keys()]) this.remove(id);
  }

  apply(frame: ToClientGateway): void {
    this.seen?.add(frame.id);
    let card = this.cards.get(frame.id);
    if (card === undefined) {
      card = new GatewayCard(frame.id, this.canAct, (name, args, el) => this.act(frame.id, name, args, el));
      this.cards.set(frame.id, card);
      this.place(card);
    }
    card.render(frame);
    this.empty.hidden = true;
  }

  remove(id: string): void {
    this.cards.get(id)?.el.remove();
    this.cards.delete(id);
    this.empty.hidden = this.cards.size > 0;
  }

  result(msg: ToClientActionResult): void {
    this.finish(msg.id, msg.result, msg.reason);
  }

  /** An `error` frame naming an action id (a viewer's refused action, say). */
  failed(id: string, reason: string): boolean {
    if (!this.pending.has(id)) return false;
    this.finish(id, 'error', reason);
    return true;
  }

  private act(gateway: string, name: string, args: ActionArgs, el: HTMLElement): void {
    const id = `a${Date.now().toString(36)}-${(++this.seq).toString(36)}`;
    if (!this.deps.act(gateway, name, args, id)) return show(el, 'error', 'not connected');
    show(el, 'pending', `${name}…`);
    const timer = window.setTimeout(() => {
      this.pending.delete(id);
      show(el, 'timeout', 'no answer');
    }, ACTION_RESULT_TIMEOUT_MS);
    this.pending.set(id, { el, timer });
  }

  private finish(id: string, result: string, reason?: string): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    show(p.el, result, reason);
  }

  /** Cards sorted by gateway id. */
  private place(card: GatewayCard): void {
    let next: GatewayCard | undefined;
    for (const other of this.cards.values()) {
      if (other.id > card.id && (next === undefined || other.id < next.id)) next = other;
    }
    this.el.insertBefore(card.el, next?.el ?? null);
  }
}

function show(el: HTMLElement, result: string, reason?: string): void {
  el.dataset.result = result;
  setText(el, result === 'pending' ? (reason ?? '') : reason ? `${result}: ${reason}` : result);
}
