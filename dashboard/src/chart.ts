// A tiny canvas line chart: a few hundred bytes instead of a chart library. Points go into fixed-size ring
// buffers; drawing happens only in the animation-frame flush and only for charts on screen.

export const CHART_POINTS = 120;

export interface ChartTheme {
  grid: string;
  text: string;
  series: string[];
}

let theme: ChartTheme = { grid: '#2a3340', text: '#8b98a8', series: ['#5eead4', '#f59e0b', '#a78bfa', '#f472b6'] };

/** Reads the chart colours from CSS custom properties (called when the theme changes). */
export function loadChartTheme(): void {
  const s = getComputedStyle(document.documentElement);
  const v = (name: string, fallback: string) => s.getPropertyValue(name).trim() || fallback;
  theme = {
    grid: v('--chart-grid', theme.grid),
    text: v('--muted', theme.text),
    series: [1, 2, 3, 4].map((i) => v(`--series-${i}`, theme.series[i - 1])),
  };
}

/** Fixed-capacity history of one or more series sharing a time axis. */
export class Series {
  readonly t = new Float64Array(CHART_POINTS);
  readonly v: Float64Array[];
  start = 0;
  length = 0;

  constructor(readonly count: number) {
    this.v = Array.from({ length: count }, () => new Float64Array(CHART_POINTS));
  }

  push(t: number, values: readonly number[]): void {
    const i = (this.start + this.length) % CHART_POINTS;
    this.t[i] = t;
    for (let s = 0; s < this.count; s++) this.v[s][i] = values[s] ?? Number.NaN;
    if (this.length < CHART_POINTS) this.length++;
    else this.start = (this.start + 1) % CHART_POINTS;
  }

  clear(): void {
    this.start = 0;
    this.length = 0;
  }

  /**
   * Puts older points (oldest first) before the ones held: those stamped at or after the oldest held point are
   * left out (live values win), and the newest CHART_POINTS of the whole are kept.
   */
  prepend(points: readonly (readonly [t: number, values: readonly number[]])[]): void {
    const firstHeld = this.length > 0 ? this.t[this.start] : Number.POSITIVE_INFINITY;
    const older = points.filter(([t]) => t < firstHeld);
    if (older.length === 0) return;
    const held: [number, number[]][] = [];
    for (let k = 0; k < this.length; k++) {
      const i = (this.start + k) % CHART_POINTS;
      held.push([this.t[i], this.v.map((v) => v[i])]);
    }
    this.clear();
    for (const [t, values] of [...older, ...held].slice(-CHART_POINTS)) this.push(t, values);
  }
}

/** `color` picks the first series colour (1-4), so each kind of value keeps its own colour across cards. */
export function drawChart(canvas: HTMLCanvasElement, series: Series, color = 1): void {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const hgt = canvas.clientHeight;
  if (w === 0 || hgt === 0) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  const n = series.length;
  if (n === 0) return;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (let s = 0; s < series.count; s++) {
    for (let k = 0; k < n; k++) {
      const y = series.v[s][(series.start + k) % CHART_POINTS];
      if (Number.isNaN(y)) continue;
      if (y < min) min = y;
      if (y > max) max = y;
    }
  }
  if (min === Number.POSITIVE_INFINITY) return;
  if (max - min < 1e-9) {
    max += 1;
    min -= 1;
  }
  const pad = (max - min) * 0.1;
  min -= pad;
  max += pad;
  const t0 = series.t[series.start];
  const t1 = series.t[(series.start + n - 1) % CHART_POINTS];
  const span = Math.max(t1 - t0, 1);
  const top = 4;
  const bottom = hgt - 4;
  const yOf = (y: number) => bottom - ((y - min) / (max - min)) * (bottom - top);
  // One faint mid line is enough on a wall screen; the numbers are in the big value.
  ctx.strokeStyle = theme.grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, Math.round(hgt / 2) + 0.5);
  ctx.lineTo(w, Math.round(hgt / 2) + 0.5);
  ctx.stroke();
  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  for (let s = 0; s < series.count; s++) {
    ctx.strokeStyle = theme.series[(s + color - 1) % theme.series.length];
    ctx.beginPath();
    let pen = false;
    for (let k = 0; k < n; k++) {
      const i = (series.start + k) % CHART_POINTS;
      const y = series.v[s][i];
      if (Number.isNaN(y)) {
        pen = false;
        continue;
      }
      const x = n === 1 ? w - 2 : ((series.t[i] - t0) / span) * (w - 4) + 2;
      if (pen) ctx.lineTo(x, yOf(y));
      else ctx.moveTo(x, yOf(y));
      pen = true;
    }
    ctx.stroke();
  }
  ctx.fillStyle = theme.text;
  ctx.font = '10px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  ctx.fillText(fmt(max - pad), 2, 1);
  ctx.textBaseline = 'bottom';
  ctx.fillText(fmt(min + pad), 2, hgt - 1);
}

function fmt(n: number): string {
  return Math.abs(n) >= 100 ? Math.round(n).toString() : (Math.round(n * 10) / 10).toString();
}
