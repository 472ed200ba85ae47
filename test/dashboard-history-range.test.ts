// The history view's arithmetic (dashboard/src/history-range.ts): presence bands, zoom, pan, bucket widths and
// the custom range's date-time fields. No browser: the view itself is tested in dashboard-history.test.ts.
import { describe, expect, it } from 'vitest';
import {
  BUCKETS,
  bucketStep,
  fromLocalInput,
  MAX_SPAN_MS,
  MIN_SPAN_MS,
  panned,
  presenceBands,
  toLocalInput,
  zoomed,
} from '../dashboard/src/history-range.ts';

const r = { from: 1000, to: 2000 };

describe('history view arithmetic', () => {
  it('turns presence events into online/offline bands over the range', () => {
    // No event: the live status holds for the whole range.
    expect(presenceBands([], r, true)).toEqual([{ from: 1000, to: 2000, online: true }]);
    expect(presenceBands([], r, false)).toEqual([{ from: 1000, to: 2000, online: false }]);
    // The state before the first event is its opposite; repeated states, writes and events outside are ignored.
    const events = [
      { at: 500, kind: 'out' },
      { at: 1200, kind: 'out' },
      { at: 1300, kind: 'write' },
      { at: 1400, kind: 'out' },
      { at: 1500, kind: 'new' },
      { at: 1600, kind: 'new' },
      { at: 2500, kind: 'out' },
    ];
    expect(presenceBands(events, r, true)).toEqual([
      { from: 1000, to: 1200, online: true },
      { from: 1200, to: 1500, online: false },
      { from: 1500, to: 2000, online: true },
    ]);
    // An event at the very start gives no empty band.
    expect(presenceBands([{ at: 1000, kind: 'new' }], r, true)).toEqual([{ from: 1000, to: 2000, online: true }]);
  });

  it('zooms around the centre, never below the narrowest span nor past now', () => {
    const day = { from: 0, to: 86_400_000 };
    expect(zoomed(day, 0.5, 1e12)).toEqual({ from: 21_600_000, to: 64_800_000 });
    expect(zoomed(day, 2, 1e12)).toEqual({ from: -43_200_000, to: 129_600_000 });
    const tiny = zoomed({ from: 0, to: 1000 }, 0.5, 1e12);
    expect(tiny.to - tiny.from).toBe(MIN_SPAN_MS);
    const huge = zoomed({ from: 0, to: MAX_SPAN_MS }, 2, 1e13);
    expect(huge.to - huge.from).toBe(MAX_SPAN_MS);
    // Zooming out of a range that ends now keeps its end at now.
    expect(zoomed({ from: 9000, to: 10_000 }, 20, 10_000)).toEqual({ from: -10_000, to: 10_000 });
  });

  it('pans by a fraction of the width, never past now', () => {
    expect(panned(r, -0.5, 10_000)).toEqual({ from: 500, to: 1500 });
    expect(panned(r, 0.5, 10_000)).toEqual({ from: 1500, to: 2500 });
    expect(panned(r, 0.5, 2100)).toEqual({ from: 1100, to: 2100 });
  });

  it('asks for about BUCKETS buckets whatever the range', () => {
    expect(bucketStep({ from: 0, to: 7 * 86_400_000 })).toBe(Math.ceil((7 * 86_400_000) / BUCKETS));
    expect(bucketStep({ from: 0, to: 10 })).toBe(1);
  });

  it('reads back the date-time fields it writes, and refuses anything else', () => {
    const t = new Date(2026, 11, 2, 7, 30).getTime();
    expect(toLocalInput(t)).toBe('2026-12-02T07:30');
    expect(fromLocalInput(toLocalInput(t))).toBe(t);
    for (const bad of ['', 'yesterday', '2026-12-02', '2026-12-02T07:30Z', '1764660600000']) {
      expect(fromLocalInput(bad)).toBeUndefined();
    }
  });
});
