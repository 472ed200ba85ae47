// Hand-drawn OS badges (no logo files, no fonts): a small shape plus the name, so they read at a distance.
import { h, svg } from './dom.ts';

type Shape = [string, Record<string, string>];

const ICONS: Record<string, { label: string; shapes: Shape[] }> = {
  riot: {
    label: 'RIOT',
    shapes: [
      ['circle', { cx: '12', cy: '12', r: '9', fill: 'none', stroke: 'currentColor', 'stroke-width': '2' }],
      ['path', { d: 'M9 17V7h4a3 3 0 0 1 0 6H9M13 13l3 4', fill: 'none', stroke: 'currentColor', 'stroke-width': '2' }],
    ],
  },
  micropython: {
    label: 'MicroPython',
    shapes: [
      [
        'rect',
        {
          x: '4',
          y: '3',
          width: '16',
          height: '18',
          rx: '3',
          fill: 'none',
          stroke: 'currentColor',
          'stroke-width': '2',
        },
      ],
      ['path', { d: 'M8 17V8l4 5 4-5v9', fill: 'none', stroke: 'currentColor', 'stroke-width': '2' }],
    ],
  },
  android: {
    label: 'Android',
    shapes: [
      ['path', { d: 'M5 16a7 7 0 0 1 14 0z', fill: 'currentColor' }],
      ['path', { d: 'M8 10L6 7M16 10l2-3', stroke: 'currentColor', 'stroke-width': '1.6', 'stroke-linecap': 'round' }],
      ['circle', { cx: '9.5', cy: '13', r: '1', fill: 'var(--card)' }],
      ['circle', { cx: '14.5', cy: '13', r: '1', fill: 'var(--card)' }],
    ],
  },
  linux: {
    label: 'Linux',
    shapes: [
      ['ellipse', { cx: '12', cy: '14', rx: '6', ry: '7', fill: 'currentColor' }],
      ['ellipse', { cx: '12', cy: '15', rx: '3.6', ry: '4.6', fill: 'var(--card)' }],
      ['circle', { cx: '10.3', cy: '8.5', r: '0.9', fill: 'var(--card)' }],
      ['circle', { cx: '13.7', cy: '8.5', r: '0.9', fill: 'var(--card)' }],
      ['path', { d: 'M11 10.5h2l-1 1.2z', fill: '#f59e0b' }],
    ],
  },
};

/** The badge for an `os` value; unknown systems get a plain text badge. */
export function osBadge(os: string): HTMLElement {
  const key = os.toLowerCase().replace(/[^a-z]/g, '');
  const icon = ICONS[key];
  if (!icon) return h('span', { class: 'os-badge', title: os }, os.slice(0, 24));
  return h('span', { class: `os-badge os-${key}`, title: icon.label }, svg('0 0 24 24', icon.shapes), icon.label);
}
