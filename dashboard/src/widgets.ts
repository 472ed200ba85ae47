// One widget per kind of resource. Every widget shows device strings through textContent only.
import type { Json } from '../../services/protocol/messages.ts';
import { drawChart, Series } from './chart.ts';
import { h, setText } from './dom.ts';
import { MapView } from './map.ts';
import { asText, formatNumber, parseImu, parsePosition, parseReading, SENSOR_UNITS } from './values.ts';

/** Sends a write and shows its outcome in `result`. */
export type Writer = (uid: string, endpoint: string, payload: Json, result: HTMLElement) => void;

export interface WidgetContext {
  uid: string;
  endpoint: string;
  canWrite: boolean;
  write: Writer;
}

export interface Widget {
  readonly el: HTMLElement;
  set(data: Json, now: number): void;
  /** Redraws a chart; only called for cards on screen. */
  draw?(): void;
  /** True when draw() has something new to show. */
  dirty?: boolean;
  /** Charts that can start from history: takes the points before the live ones (oldest first). */
  backfill?(points: readonly (readonly [at: number, value: Json])[]): void;
}

/** Resources shown in the card header rather than as rows. */
export const HEADER_RESOURCES = new Set(['name', 'os', 'board']);
/** Resources that are only shown (no write box). */
const READ_ONLY = new Set([
  'node',
  'mcu',
  'ip',
  'vendor',
  'version',
  'text',
  'twitter',
  'suit_state',
  'dwnld',
  'protocol',
]);

function resultSpan(): HTMLElement {
  return h('span', { class: 'write-result', role: 'status', 'aria-live': 'polite' });
}

/** Temperature warm, humidity cool...: the same colour for the same quantity on every card. */
const CHART_COLOR: Record<string, number> = { temperature: 2, humidity: 1, pressure: 3, eco2: 4, tvoc: 3 };

/** Big value + unit + live chart for temperature, pressure, humidity, eco2, tvoc, illuminance... */
class SensorWidget implements Widget {
  readonly el: HTMLElement;
  private readonly num = h('span', { class: 'big-num' });
  private readonly unit = h('span', { class: 'big-unit' });
  private readonly canvas = h('canvas', { class: 'chart', height: '56' });
  private readonly series = new Series(1);
  dirty = false;

  constructor(private readonly endpoint: string) {
    this.el = h('div', { class: 'w-sensor' }, h('div', { class: 'big' }, this.num, this.unit), this.canvas);
  }

  set(data: Json, now: number): void {
    const r = parseReading(data);
    if (r === undefined) {
      // Garbage is shown as text, but it does not break the chart.
      setText(this.num, asText(data).slice(0, 40));
      setText(this.unit, '');
      this.el.classList.add('garbled');
      return;
    }
    this.el.classList.remove('garbled');
    setText(this.num, formatNumber(r.value));
    setText(this.unit, r.unit || SENSOR_UNITS[this.endpoint] || '');
    this.series.push(now, [r.value]);
    this.dirty = true;
  }

  draw(): void {
    this.dirty = false;
    drawChart(this.canvas, this.series, CHART_COLOR[this.endpoint] ?? 1);
    // What the chart holds, for tests and for anyone inspecting the page (a canvas has no text to read).
    this.canvas.dataset.points = String(this.series.length);
    this.canvas.dataset.first = this.series.length > 0 ? String(this.series.t[this.series.start]) : '';
  }

  backfill(points: readonly (readonly [at: number, value: Json])[]): void {
    const readings: [number, number[]][] = [];
    for (const [at, value] of points) {
      const r = parseReading(value);
      if (r !== undefined) readings.push([at, [r.value]]);
    }
    this.series.prepend(readings);
    this.dirty = true;
  }
}

/** pyaiot's imu: accelerometer norm and gyroscope x/y/z. */
class ImuWidget implements Widget {
  readonly el: HTMLElement;
  private readonly acc = h('span', { class: 'imu-val' });
  private readonly gyro = h('span', { class: 'imu-val' });
  private readonly accCanvas = h('canvas', { class: 'chart', height: '48' });
  private readonly gyroCanvas = h('canvas', { class: 'chart', height: '48' });
  private readonly accSeries = new Series(1);
  private readonly gyroSeries = new Series(3);
  dirty = false;

  constructor() {
    this.el = h(
      'div',
      { class: 'w-imu' },
      h('div', { class: 'imu-row' }, h('span', { class: 'imu-label' }, 'acc |a|'), this.acc),
      this.accCanvas,
      h('div', { class: 'imu-row' }, h('span', { class: 'imu-label' }, 'gyro x y z'), this.gyro),
      this.gyroCanvas,
    );
  }

  set(data: Json, now: number): void {
    const s = parseImu(data);
    if (s === undefined) {
      setText(this.acc, asText(data).slice(0, 60));
      return;
    }
    if (s.acc !== undefined) {
      setText(this.acc, formatNumber(s.acc));
      this.accSeries.push(now, [s.acc]);
    }
    if (s.gyro !== undefined) {
      setText(this.gyro, s.gyro.map(formatNumber).join('  '));
      this.gyroSeries.push(now, s.gyro);
    }
    this.dirty = true;
  }

  draw(): void {
    this.dirty = false;
    drawChart(this.accCanvas, this.accSeries);
    drawChart(this.gyroCanvas, this.gyroSeries);
  }
}

/** ON/OFF with a switch; writes "1" / "0" (pyaiot's payloads). */
class LedWidget implements Widget {
  readonly el: HTMLElement;
  private readonly state = h('span', { class: 'led-state' });
  private readonly button?: HTMLButtonElement;
  private readonly result = resultSpan();
  private on = false;

  constructor(ctx: WidgetContext) {
    const lamp = h('span', { class: 'led-lamp', 'aria-hidden': 'true' });
    this.el = h('div', { class: 'w-led' }, lamp, this.state);
    if (ctx.canWrite) {
      this.button = h(
        'button',
        {
          class: 'switch',
          type: 'button',
          role: 'switch',
          'aria-checked': 'false',
          'aria-label': `toggle ${ctx.endpoint}`,
        },
        h('span', { class: 'knob' }),
      );
      this.button.addEventListener('click', () => ctx.write(ctx.uid, ctx.endpoint, this.on ? '0' : '1', this.result));
      this.el.append(this.button, this.result);
    }
  }

  set(data: Json): void {
    const text = asText(data).trim();
    this.on = text === '1' || text.toLowerCase() === 'on' || data === true;
    const known = this.on || text === '0' || text.toLowerCase() === 'off' || data === false;
    setText(this.state, known ? (this.on ? 'ON' : 'OFF') : text.slice(0, 20));
    this.el.classList.toggle('on', this.on);
    this.button?.setAttribute('aria-checked', String(this.on));
  }
}

/** pyaiot's robot pad: s(top), l(eft), r(ight), u(p). */
class RobotWidget implements Widget {
  readonly el: HTMLElement;
  private readonly last = h('span', { class: 'robot-last' });

  constructor(ctx: WidgetContext) {
    this.el = h('div', { class: 'w-robot' }, this.last);
    if (!ctx.canWrite) return;
    const result = resultSpan();
    const pad = h('div', { class: 'pad' });
    const buttons: [string, string, string][] = [
      ['u', '▲', 'forward'],
      ['l', '◀', 'left'],
      ['s', '■', 'stop'],
      ['r', '▶', 'right'],
    ];
    for (const [payload, glyph, label] of buttons) {
      const b = h('button', { type: 'button', class: `pad-${payload}`, 'aria-label': label, title: label }, glyph);
      b.addEventListener('click', () => ctx.write(ctx.uid, ctx.endpoint, payload, result));
      pad.append(b);
    }
    this.el.append(pad, result);
  }

  set(data: Json): void {
    setText(this.last, `last: ${asText(data).slice(0, 40)}`);
  }
}

class PositionWidget implements Widget {
  readonly el: HTMLElement;
  private readonly map = new MapView();
  private readonly bad = h('span', { class: 'muted' });

  constructor() {
    this.el = h('div', { class: 'w-position' }, this.map.el, this.bad);
  }

  set(data: Json): void {
    const pos = parsePosition(data);
    if (pos === undefined) {
      setText(this.bad, `unreadable position: ${asText(data).slice(0, 60)}`);
      return;
    }
    setText(this.bad, '');
    this.map.show(pos);
  }
}

/** Any other resource: its value as text, plus a write box for operators. */
class TextWidget implements Widget {
  readonly el: HTMLElement;
  private readonly value = h('span', { class: 'text-val' });

  constructor(ctx: WidgetContext, writable: boolean) {
    this.el = h('div', { class: 'w-text' }, this.value);
    if (!writable || !ctx.canWrite) return;
    const input = h('input', {
      type: 'text',
      class: 'write-input',
      placeholder: 'payload',
      'aria-label': `value to write to ${ctx.endpoint}`,
      maxlength: '4096',
    });
    const result = resultSpan();
    const form = h('form', { class: 'write-box' }, input, h('button', { type: 'submit' }, 'Send'), result);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      ctx.write(ctx.uid, ctx.endpoint, input.value, result);
    });
    this.el.append(form);
  }

  set(data: Json): void {
    setText(this.value, asText(data).slice(0, 500));
  }
}

export function makeWidget(ctx: WidgetContext): Widget {
  const e = ctx.endpoint;
  if (e in SENSOR_UNITS) return new SensorWidget(e);
  switch (e) {
    case 'imu':
      return new ImuWidget();
    case 'led':
      return new LedWidget(ctx);
    case 'robot':
      return new RobotWidget(ctx);
    case 'position':
      return new PositionWidget();
    default:
      return new TextWidget(ctx, !READ_ONLY.has(e));
  }
}
