// The history view of one resource: a dialog over the cards with a range picker (1 h, 24 h, 7 d, custom), zoom
// (drag across the chart, or − / +) and pan (◀ ▶), a time axis, CSV download of the visible range, the node's
// presence as online/offline bands, and a log of values for text resources. It opens with the last hour from the
// history service and then follows the live values the page receives. Loaded on first use (dynamic import from
// history-opener.ts): uPlot never weighs on the first paint of the card grid.
//
// uPlot styles its elements through the CSSOM (element.style), which the page's CSP (`style-src 'self'`) allows;
// its stylesheet is bundled. Every device string is set as text.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './history.css';
import type { Json } from '../../services/protocol/messages.ts';
import { formatTime, h, setText } from './dom.ts';
import { HistoryClient, HistoryError, type HistoryPoint, type PresenceEvent } from './history-client.ts';
import {
  BUCKETS,
  bucketStep,
  fromLocalInput,
  HOUR_MS,
  type PresetId,
  panned,
  presenceBands,
  RANGE_PRESETS,
  RAW_POINTS,
  type Range,
  toLocalInput,
  zoomed,
} from './history-range.ts';
import type { NodeFrame } from './model.ts';
import { asText, parseReading, SENSOR_UNITS } from './values.ts';

/** Entries a text log keeps (newest first); older ones are left to the CSV. */
export const LOG_ENTRIES = 1_000;
/** How much of a device's text one log line shows. */
const LOG_TEXT_MAX = 500;
const CHART_HEIGHT = 320;

export interface HistoryTarget {
  uid: string;
  endpoint: string;
  /** The node's name as the card shows it. */
  title: string;
  /** The node's status in the live model (the presence before any event in range). */
  online: boolean;
}

export interface HistoryViewDeps {
  brokerUrl: string;
  token(): string | undefined;
}

type State = 'loading' | 'ready' | 'unavailable' | 'error';

export class HistoryView {
  readonly el: HTMLElement;
  private readonly client: HistoryClient;
  private target?: HistoryTarget;
  /** The selected preset, or undefined for a custom (zoomed, panned or typed) range. */
  private preset: PresetId | undefined = '1h';
  private range: Range = { from: 0, to: 0 };
  /** Numbers are charted, anything else is a log. */
  private numeric = true;
  private xs: number[] = [];
  private ys: (number | null)[] = [];
  private log: HistoryPoint[] = [];
  private events: PresenceEvent[] = [];
  private plot?: uPlot;
  private loadSeq = 0;
  private abort?: AbortController;
  private redrawRequested = false;

  private readonly dialog = h('section', {
    class: 'overlay-panel history',
    role: 'dialog',
    'aria-modal': 'true',
    'aria-labelledby': 'history-title',
  });
  private readonly title = h('h2', { id: 'history-title', class: 'history-title' });
  private readonly closeButton = h('button', { type: 'button', class: 'history-close', 'aria-label': 'close' }, '✕');
  private readonly presetButtons = new Map<PresetId | 'custom', HTMLButtonElement>();
  private readonly customForm = h('form', { class: 'history-custom', hidden: true });
  private readonly fromInput = h('input', { type: 'datetime-local', 'aria-label': 'from', name: 'from' });
  private readonly toInput = h('input', { type: 'datetime-local', 'aria-label': 'to', name: 'to' });
  private readonly csvButton = h('button', { type: 'button', class: 'history-csv' }, 'CSV');
  private readonly note = h('p', { class: 'history-note', role: 'status' });
  private readonly chart = h('div', { class: 'history-chart' });
  private readonly presence = h('div', { class: 'presence', 'aria-label': 'presence' });
  private readonly logList = h('ol', { class: 'history-log' });

  constructor(deps: HistoryViewDeps) {
    this.client = new HistoryClient(deps.brokerUrl, deps.token);
    const toolbar = h('div', { class: 'history-toolbar' });
    for (const p of RANGE_PRESETS) toolbar.append(this.presetButton(p.id, p.label));
    toolbar.append(this.presetButton('custom', 'Custom'));
    const tool = (label: string, title: string, cls: string, act: () => void) => {
      const b = h('button', { type: 'button', class: cls, title, 'aria-label': title }, label);
      b.addEventListener('click', act);
      return b;
    };
    toolbar.append(
      tool('◀', 'earlier', 'history-pan-back', () => this.setCustom(panned(this.range, -0.5, Date.now()))),
      tool('▶', 'later', 'history-pan-forward', () => this.setCustom(panned(this.range, 0.5, Date.now()))),
      tool('−', 'zoom out', 'history-zoom-out', () => this.setCustom(zoomed(this.range, 2, Date.now()))),
      tool('+', 'zoom in', 'history-zoom-in', () => this.setCustom(zoomed(this.range, 0.5, Date.now()))),
      this.csvButton,
    );
    this.customForm.append(
      h('label', {}, 'from ', this.fromInput),
      h('label', {}, 'to ', this.toInput),
      h('button', { type: 'submit' }, 'Show'),
    );
    this.customForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const from = fromLocalInput(this.fromInput.value);
      const to = fromLocalInput(this.toInput.value);
      if (from === undefined || to === undefined || from >= to) {
        this.setNote('error', 'Pick a start before the end.');
        return;
      }
      this.setCustom({ from, to });
    });
    this.csvButton.addEventListener('click', () => {
      this.downloadCsv().catch((err: unknown) => this.setNote('error', `CSV failed: ${(err as Error).message}`));
    });
    this.closeButton.addEventListener('click', () => this.close());
    this.dialog.append(
      h('header', { class: 'history-head' }, this.title, this.closeButton),
      toolbar,
      this.customForm,
      this.note,
      this.chart,
      this.presence,
      this.logList,
    );
    this.el = h('div', { class: 'overlay history-overlay', hidden: true }, this.dialog);
    this.el.addEventListener('click', (ev) => {
      if (ev.target === this.el) this.close();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && this.isOpen) this.close();
    });
    window.addEventListener('resize', () => this.resize());
  }

  get isOpen(): boolean {
    return !this.el.hidden;
  }

  open(target: HistoryTarget): void {
    this.target = target;
    this.dialog.dataset.uid = target.uid;
    this.dialog.dataset.endpoint = target.endpoint;
    setText(this.title, `${target.title} · ${target.endpoint}`);
    this.numeric = Object.hasOwn(SENSOR_UNITS, target.endpoint);
    this.el.hidden = false;
    this.closeButton.focus();
    this.choosePreset('1h');
  }

  close(): void {
    this.abort?.abort();
    this.loadSeq++;
    this.el.hidden = true;
    this.target = undefined;
    this.plot?.destroy();
    this.plot = undefined;
    this.chart.replaceChildren();
  }

  /** A live frame from the broker: values of the shown resource, and the node's presence. */
  frame(msg: NodeFrame): void {
    const t = this.target;
    if (t === undefined || msg.uid !== t.uid) return;
    const now = Date.now();
    if (msg.type === 'new' || msg.type === 'out') {
      t.online = msg.type === 'new' && msg.status === 'online';
      // A `new` may announce a node that is offline: the band follows the status, not the frame's type.
      if (this.preset !== undefined) this.events.push({ at: now, kind: t.online ? 'new' : 'out' });
    } else if (msg.type === 'update' && msg.endpoint.replace(/^\/+/, '') === t.endpoint) {
      // Only a range that follows the clock takes live values; a custom range is a fixed window on the past.
      if (this.preset === undefined) return;
      this.add(now, msg.data);
    } else return;
    if (this.preset !== undefined) this.slide(now);
    this.requestRedraw();
  }

  // -----------------------------------------------------------------------------------------
  // Ranges

  private presetButton(id: PresetId | 'custom', label: string): HTMLButtonElement {
    const b = h('button', { type: 'button', class: 'history-range', 'data-range': id, 'aria-pressed': 'false' }, label);
    b.addEventListener('click', () => {
      if (id === 'custom') this.setCustom(this.range);
      else this.choosePreset(id);
    });
    this.presetButtons.set(id, b);
    return b;
  }

  private choosePreset(id: PresetId): void {
    const ms = RANGE_PRESETS.find((p) => p.id === id)?.ms ?? HOUR_MS;
    const now = Date.now();
    this.preset = id;
    this.range = { from: now - ms, to: now };
    this.customForm.hidden = true;
    this.markPreset(id);
    this.load();
  }

  private setCustom(r: Range): void {
    this.preset = undefined;
    this.range = r;
    this.fromInput.value = toLocalInput(r.from);
    this.toInput.value = toLocalInput(r.to);
    this.customForm.hidden = false;
    this.markPreset('custom');
    this.load();
  }

  private markPreset(id: PresetId | 'custom'): void {
    for (const [key, b] of this.presetButtons) b.setAttribute('aria-pressed', String(key === id));
  }

  /** A following range moves with the clock; what fell off its start goes. */
  private slide(now: number): void {
    const span = this.range.to - this.range.from;
    this.range = { from: now - span, to: now };
    let drop = 0;
    while (drop < this.xs.length && this.xs[drop] < this.range.from) drop++;
    if (drop > 0) {
      this.xs.splice(0, drop);
      this.ys.splice(0, drop);
    }
  }

  // -----------------------------------------------------------------------------------------
  // Loading

  private load(): void {
    const t = this.target;
    if (t === undefined) return;
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    const seq = ++this.loadSeq;
    const r = this.range;
    this.chart.dataset.state = 'loading';
    this.dialog.dataset.state = 'loading';
    this.chart.dataset.from = String(r.from);
    this.chart.dataset.to = String(r.to);
    this.setNote('loading', 'Loading…');
    const events = this.client.events(t.uid, r.from, r.to, abort.signal).catch(() => [] as PresenceEvent[]);
    this.fetchPoints(t, r, abort.signal)
      .then(async ({ points, note }) => {
        const ev = await events;
        if (seq !== this.loadSeq) return;
        this.events = ev;
        this.show(points, r.to);
        this.setNote('ready', note);
      })
      .catch((err: unknown) => {
        if (seq !== this.loadSeq || abort.signal.aborted) return;
        this.events = [];
        this.show([], r.to);
        if (err instanceof HistoryError && err.unavailable) {
          // No history service: the view still follows the live values, and says why the past is missing.
          this.setNote('unavailable', `No history: ${err.message}. Showing live values only.`);
        } else {
          const e = err as Error;
          this.setNote('error', `History refused: ${e instanceof HistoryError ? `${e.code} ` : ''}${e.message}`);
        }
      });
  }

  /** Raw points when the range holds few; else one per bucket, so a busy week stays about BUCKETS points. */
  private async fetchPoints(
    t: HistoryTarget,
    r: Range,
    signal: AbortSignal,
  ): Promise<{ points: HistoryPoint[]; note: string }> {
    const raw = await this.client.points(t.uid, t.endpoint, { ...r, limit: RAW_POINTS }, signal);
    if (!this.numeric) this.numeric = looksNumeric(raw.points);
    if (raw.points.length < RAW_POINTS) {
      return { points: raw.points, note: `${raw.points.length} values` };
    }
    const step = bucketStep(r);
    // avg ignores text; a device that sends "23.5°C" as text is thinned with its last value per bucket instead.
    const agg = raw.points.some((p) => typeof p[1] === 'number') ? 'avg' : 'last';
    const bucketed = await this.client.points(t.uid, t.endpoint, { ...r, step, agg, limit: BUCKETS + 1 }, signal);
    return { points: bucketed.points, note: `${agg} per ${describeStep(step)} (${bucketed.points.length} buckets)` };
  }

  /**
   * Replaces what is shown by `points`. A range that follows the clock keeps the live values that arrived while
   * the query ran (after its end, `asked`); a fixed range shows the store's answer alone.
   */
  private show(points: HistoryPoint[], asked: number): void {
    const following = this.preset !== undefined;
    const live: [number, number | null][] = [];
    if (following)
      for (let i = 0; i < this.xs.length; i++) if (this.xs[i] >= asked) live.push([this.xs[i], this.ys[i]]);
    const liveLog = following ? this.log.filter(([at]) => at >= asked) : [];
    this.xs = [];
    this.ys = [];
    this.log = [];
    for (const [at, v] of points) this.add(at, v);
    for (const [at, y] of live) {
      this.xs.push(at);
      this.ys.push(y);
    }
    this.log.push(...liveLog);
    this.chart.hidden = !this.numeric;
    this.logList.hidden = this.numeric;
    if (this.numeric) this.ensurePlot();
    this.redraw();
  }

  private add(at: number, value: Json): void {
    if (this.numeric) {
      this.xs.push(at);
      this.ys.push(parseReading(value)?.value ?? null);
    } else {
      this.log.push([at, value]);
      if (this.log.length > LOG_ENTRIES * 2) this.log.splice(0, this.log.length - LOG_ENTRIES);
    }
  }

  private setNote(state: State | 'loading', text: string): void {
    this.chart.dataset.state = state;
    this.dialog.dataset.state = state;
    this.note.dataset.state = state;
    setText(this.note, text);
  }

  // -----------------------------------------------------------------------------------------
  // Drawing

  private requestRedraw(): void {
    if (this.redrawRequested) return;
    this.redrawRequested = true;
    requestAnimationFrame(() => {
      this.redrawRequested = false;
      this.redraw();
    });
  }

  private redraw(): void {
    if (this.target === undefined) return;
    const r = this.range;
    this.chart.dataset.from = String(r.from);
    this.chart.dataset.to = String(r.to);
    this.chart.dataset.points = String(this.numeric ? this.xs.length : this.log.length);
    const first = this.numeric ? this.xs[0] : this.log[0]?.[0];
    const last = this.numeric ? this.xs[this.xs.length - 1] : this.log[this.log.length - 1]?.[0];
    this.chart.dataset.first = first === undefined ? '' : String(first);
    this.chart.dataset.last = last === undefined ? '' : String(last);
    if (this.numeric) this.plot?.setData([this.xs, this.ys]);
    else this.drawLog();
    this.drawPresence();
  }

  private ensurePlot(): void {
    if (this.plot !== undefined) return;
    const css = getComputedStyle(document.documentElement);
    const v = (name: string, fallback: string) => css.getPropertyValue(name).trim() || fallback;
    const muted = v('--muted', '#8b98a8');
    const grid = v('--chart-grid', '#223040');
    const axis: uPlot.Axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const endpoint = this.target?.endpoint ?? '';
    this.plot = new uPlot(
      {
        width: this.plotWidth(),
        height: CHART_HEIGHT,
        ms: 1,
        series: [
          {},
          {
            label: endpoint,
            stroke: v('--series-1', '#5eead4'),
            width: 2,
            spanGaps: false,
            points: { show: false },
            value: (_u, val) =>
              val === null
                ? '–'
                : `${val} ${Object.hasOwn(SENSOR_UNITS, endpoint) ? SENSOR_UNITS[endpoint] : ''}`.trim(),
          },
        ],
        scales: { x: { time: true, range: () => [this.range.from, this.range.to] } },
        axes: [axis, { ...axis, size: 56 }],
        cursor: { drag: { x: true, y: false, setScale: false } },
        hooks: {
          // A drag across the chart zooms to what it covers: a new query, so the detail comes from the store.
          setSelect: [
            (u) => {
              if (u.select.width < 2) return;
              const from = Math.round(u.posToVal(u.select.left, 'x'));
              const to = Math.round(u.posToVal(u.select.left + u.select.width, 'x'));
              u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
              this.setCustom(zoomed({ from, to }, 1, Date.now()));
            },
          ],
          draw: [() => this.alignPresence()],
        },
      },
      [this.xs, this.ys],
      this.chart,
    );
  }

  private plotWidth(): number {
    return Math.max(200, this.chart.clientWidth || this.dialog.clientWidth - 32 || 800);
  }

  private resize(): void {
    if (this.plot === undefined || !this.isOpen) return;
    this.plot.setSize({ width: this.plotWidth(), height: CHART_HEIGHT });
  }

  /** Newest first; at most LOG_ENTRIES lines, each the device's text set as text. */
  private drawLog(): void {
    const rows: HTMLElement[] = [];
    for (let i = this.log.length - 1; i >= 0 && rows.length < LOG_ENTRIES; i--) {
      const [at, value] = this.log[i];
      rows.push(
        h(
          'li',
          { 'data-at': String(at) },
          h('time', { datetime: new Date(at).toISOString() }, formatTime(at)),
          h('span', { class: 'log-value' }, asText(value).slice(0, LOG_TEXT_MAX)),
        ),
      );
    }
    if (rows.length === 0) rows.push(h('li', { class: 'log-empty' }, 'No values in this range.'));
    this.logList.replaceChildren(...rows);
  }

  private drawPresence(): void {
    const t = this.target;
    if (t === undefined) return;
    const r = this.range;
    const span = r.to - r.from;
    const bands = presenceBands(this.events, r, t.online);
    this.presence.dataset.bands = bands.map((b) => (b.online ? 'online' : 'offline')).join(',');
    this.presence.replaceChildren(
      ...bands.map((b) => {
        const band = h('span', {
          class: `band ${b.online ? 'online' : 'offline'}`,
          title: `${b.online ? 'online' : 'offline'} ${formatTime(b.from)} – ${formatTime(b.to)}`,
        });
        // CSSOM, not a style attribute: the CSP forbids inline styles but not element.style.
        band.style.left = `${((b.from - r.from) / span) * 100}%`;
        band.style.width = `${((b.to - b.from) / span) * 100}%`;
        return band;
      }),
    );
    this.alignPresence();
  }

  /** Under a chart the bands line up with its plotting area, not with the axis labels. */
  private alignPresence(): void {
    const u = this.plot;
    if (u === undefined || !this.numeric) {
      this.presence.style.marginLeft = '';
      this.presence.style.width = '';
      return;
    }
    const dpr = window.devicePixelRatio || 1;
    this.presence.style.marginLeft = `${u.bbox.left / dpr}px`;
    this.presence.style.width = `${u.bbox.width / dpr}px`;
  }

  // -----------------------------------------------------------------------------------------
  // CSV

  /** The visible range as CSV: fetched with the token in a header, handed to the browser as a Blob download. */
  private async downloadCsv(): Promise<void> {
    const t = this.target;
    if (t === undefined) return;
    const blob = await this.client.csv(t.uid, t.endpoint, this.range.from, this.range.to);
    const url = URL.createObjectURL(blob);
    const name = `${t.uid}-${t.endpoint}`.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 100);
    const a = h('a', { href: url, download: `${name}.csv`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    // The download has its own copy once it started; the URL only has to outlive the click.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }
}

/** A resource is charted when its values read as numbers ("23.5", 23.5, "23.5°C"); otherwise it is a log. */
function looksNumeric(points: readonly HistoryPoint[]): boolean {
  let numbers = 0;
  for (const [, v] of points) {
    if (v === null) continue;
    if (parseReading(v) === undefined) return false;
    numbers++;
  }
  return numbers > 0;
}

function describeStep(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 2 * HOUR_MS) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / HOUR_MS)} h`;
}
