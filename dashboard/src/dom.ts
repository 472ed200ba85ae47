// The only way this page makes elements. Text always goes through textContent / text nodes, so a string a
// device sends can never become markup (no innerHTML anywhere in the page).

type Attrs = Record<string, string | boolean | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string | undefined)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const key in attrs) {
    const v = attrs[key];
    if (v === undefined || v === false) continue;
    if (key === 'class') el.className = v as string;
    else el.setAttribute(key, v === true ? '' : v);
  }
  for (const c of children) if (c !== undefined) el.append(c);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** A small SVG from a list of [tag, attributes] shapes (static drawings only, never device data). */
export function svg(viewBox: string, shapes: [string, Record<string, string>][], cls = 'icon'): SVGSVGElement {
  const root = document.createElementNS(SVG_NS, 'svg');
  root.setAttribute('viewBox', viewBox);
  root.setAttribute('class', cls);
  root.setAttribute('aria-hidden', 'true');
  for (const [tag, attrs] of shapes) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    root.append(el);
  }
  return root;
}

/** Sets text only when it changed: avoids needless DOM mutations (and layout) on repeated values. */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});

let dayStart = 0;
let dayEnd = 0;

/** Time of day for today's timestamps, date and time for older ones. */
export function formatTime(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) return '–';
  const now = Date.now();
  if (now >= dayEnd) {
    const d = new Date(now);
    d.setHours(0, 0, 0, 0);
    dayStart = d.getTime();
    d.setDate(d.getDate() + 1);
    dayEnd = d.getTime();
  }
  return ms >= dayStart && ms < dayEnd ? timeFormat.format(ms) : dateTimeFormat.format(ms);
}
