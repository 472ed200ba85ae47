// npm run bench:dashboard — is the page still responsive with 1,000 nodes each updating once a second?
// A fake gateway (one /gw connection) feeds the real broker; the real dashboard service serves the built page
// to headless Chromium. Measured inside the browser:
//   - delay from a value's arrival (the WebSocket `message` event's timeStamp) to the DOM mutation that shows
//     it (MutationObserver), and to the next animation frame (an upper bound on when it was painted);
//   - the longest frame: Long Animation Frame entries (PerformanceObserver 'long-animation-frame', >= 50 ms)
//     and the largest gap between requestAnimationFrame callbacks.
// Usage: npm run bench:dashboard [-- --nodes 1000 --seconds 20 --warmup 5]
import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { buildDashboard } from '../../dashboard/server/build.ts';
import { DashboardServer } from '../../dashboard/server/server.ts';
import { Broker } from '../../services/broker/broker.ts';
import { brokerOptions } from '../../services/broker/options.ts';
import { resolveConfig } from '../../services/common/config.ts';
import { readPrivateKey, readPublicKey, writeKeyPair } from '../../services/common/keys.ts';
import { silentLogger } from '../../services/common/log.ts';
import { mintToken } from '../../services/common/tokens.ts';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '5' },
    width: { type: 'string', default: '1920' },
    height: { type: 'string', default: '1080' },
  },
});
const NODES = Number(args.nodes);
const SECONDS = Number(args.seconds);
const WARMUP_S = Number(args.warmup);
/** Updates go out in slices this often, so the load is even over each second, as real nodes' would be. */
const TICK_MS = 10;
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

interface PageStats {
  delays: number[];
  paintDelays: number[];
  loaf: number[];
  maxRafGap: number;
  frames: number;
  slowFrames: number;
  loafDetail: string[];
}

/** Installed before the page's own scripts: watches arrivals and DOM changes without touching the app. */
function instrument(): void {
  const w = window as unknown as { __bench: PageStats & { on: boolean } };
  const stats: PageStats & { on: boolean } = {
    delays: [],
    paintDelays: [],
    loaf: [],
    loafDetail: [],
    maxRafGap: 0,
    frames: 0,
    slowFrames: 0,
    on: false,
  };
  w.__bench = stats;
  const arrivals = new Map<string, number[]>();
  const Native = window.WebSocket;
  class Watched extends Native {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      // Registered before the app's own handler, so it sees every frame first.
      this.addEventListener('message', (ev: MessageEvent) => {
        if (!stats.on || typeof ev.data !== 'string' || !ev.data.startsWith('{"type":"update"')) return;
        const m = /"uid":"([^"]+)","endpoint":"([^"]+)"/.exec(ev.data);
        if (!m) return;
        const key = `${m[1]}\u0000${m[2]}`;
        const list = arrivals.get(key);
        if (list) list.push(ev.timeStamp);
        else arrivals.set(key, [ev.timeStamp]);
      });
    }
  }
  window.WebSocket = Watched as unknown as typeof window.WebSocket;
  let pendingPaint: number[] = [];
  const observer = new MutationObserver((records) => {
    if (!stats.on) return;
    const now = performance.now();
    const seen = new Set<Element>();
    for (const r of records) {
      const el = (r.target.nodeType === 1 ? r.target : r.target.parentElement) as Element | null;
      const row = el?.closest('[data-endpoint]');
      if (!row || seen.has(row)) continue;
      seen.add(row);
      const uid = row.closest('[data-uid]')?.getAttribute('data-uid');
      const key = `${uid}\u0000${row.getAttribute('data-endpoint')}`;
      const list = arrivals.get(key);
      if (!list) continue;
      for (const t of list) {
        stats.delays.push(now - t);
        pendingPaint.push(t);
      }
      arrivals.delete(key);
    }
  });
  document.addEventListener('DOMContentLoaded', () =>
    observer.observe(document.body, { subtree: true, childList: true, characterData: true }),
  );
  let last = 0;
  const raf = (t: number) => {
    if (stats.on) {
      if (last > 0) {
        const gap = t - last;
        if (gap > stats.maxRafGap) stats.maxRafGap = gap;
        if (gap > 50) stats.slowFrames++;
        stats.frames++;
      }
      for (const a of pendingPaint) stats.paintDelays.push(t - a);
    }
    pendingPaint = [];
    last = t;
    requestAnimationFrame(raf);
  };
  requestAnimationFrame(raf);
  try {
    new PerformanceObserver((list) => {
      if (!stats.on) return;
      for (const e of list.getEntries()) {
        stats.loaf.push(e.duration);
        const l = e as PerformanceEntry & {
          renderStart: number;
          styleAndLayoutStart: number;
          blockingDuration: number;
          scripts: { invoker: string; duration: number; forcedStyleAndLayoutDuration: number }[];
        };
        stats.loafDetail.push(
          `${e.duration.toFixed(0)} ms: scripts ${l.scripts
            .map(
              (sc) =>
                `${sc.invoker} ${sc.duration.toFixed(0)} ms (forced layout ${sc.forcedStyleAndLayoutDuration.toFixed(0)})`,
            )
            .join(
              ', ',
            )}; render ${(e.startTime + e.duration - l.renderStart).toFixed(0)} ms, style+layout ${(e.startTime + e.duration - l.styleAndLayoutStart).toFixed(0)} ms`,
        );
      }
    }).observe({ type: 'long-animation-frame', buffered: false });
  } catch {
    // Older Chromium: the rAF gaps still measure frames.
  }
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '–');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'myc-bench-dash-'));
  const keyFile = join(dir, 'key.pem');
  writeKeyPair(keyFile);
  const privateKey = readPrivateKey(keyFile);
  // Every broker option at its default (the table may grow), then what this benchmark needs.
  const brokerConfig = {
    ...resolveConfig(brokerOptions, [], {}),
    port: 0,
    host: '127.0.0.1',
    stateSyncMs: 0,
    clientBufferBytes: 8 * 1048576,
  };
  const broker = new Broker(brokerConfig, { publicKey: readPublicKey(keyFile), log: silentLogger() });
  await broker.start();
  const brokerUrl = `ws://127.0.0.1:${broker.port}`;
  // The current sources, built for this run.
  const distDir = join(dir, 'dist');
  await buildDashboard(distDir);
  const dash = new DashboardServer(
    { port: 0, host: '127.0.0.1', brokerUrl, title: 'Mycelium bench', tileUrl: '', distDir },
    { log: silentLogger() },
  );
  await dash.start();

  // The fake gateway: every node announced with pyaiot's resources, then one temperature a second each.
  const gwToken = await mintToken(privateKey, { role: 'gateway', sub: 'bench-gw', ttlSeconds: 3600 });
  const gw = new WebSocket(`${brokerUrl}/gw`, { headers: { authorization: `Bearer ${gwToken}` } });
  await new Promise((resolve, reject) => {
    gw.once('open', resolve);
    gw.once('error', reject);
  });
  const uid = (i: number) => `node-${String(i).padStart(4, '0')}`;
  for (let i = 0; i < NODES; i++) {
    gw.send(
      JSON.stringify({
        type: 'new',
        uid: uid(i),
        protocol: 'CoAP',
        data: {
          name: `sensor ${i}`,
          board: 'samr21-xpro',
          os: 'riot',
          temperature: '21.00°C',
          humidity: '40%',
          led: '0',
        },
      }),
    );
  }
  let seq = 0;
  let sent = 0;
  const feedStart = performance.now();
  // Paced by the clock, not by counting ticks: a late timer catches up, so the offered rate stays NODES/s.
  const feeder = setInterval(() => {
    const due = Math.floor(((performance.now() - feedStart) / 1000) * NODES);
    while (seq < due) {
      const i = seq % NODES;
      // A different value every round, so every update changes what the page shows (and is measured).
      const t = 15 + (i % 10) + (Math.floor(seq / NODES) % 500) / 100;
      gw.send(`{"type":"update","uid":"${uid(i)}","endpoint":"temperature","data":"${t.toFixed(2)}°C"}`);
      seq++;
      sent++;
    }
  }, TICK_MS);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  try {
    const context = await browser.newContext({
      viewport: { width: Number(args.width), height: Number(args.height) },
      colorScheme: 'dark',
    });
    const page = await context.newPage();
    // tsx (esbuild keepNames) wraps functions in __name(); the serialized function needs it in the page too.
    await page.addInitScript({ content: 'globalThis.__name = (f) => f;' });
    await page.addInitScript(instrument);
    const token = await mintToken(privateKey, { role: 'operator', sub: 'bench', ttlSeconds: 3600 });
    const loadStart = Date.now();
    await page.goto(`${dash.url}/#token=${token}`);
    await page.waitForFunction((n) => document.querySelectorAll('article.card').length >= n, NODES, {
      timeout: 60_000,
      polling: 100,
    });
    const loadMs = Date.now() - loadStart;
    console.log(`${NODES} cards on screen ${loadMs} ms after navigation`);
    await page.waitForTimeout(WARMUP_S * 1000);
    // Main-thread time by kind over the window, from the DevTools protocol (seconds of CPU per kind).
    const cdp = await context.newCDPSession(page);
    await cdp.send('Performance.enable');
    const metrics = async () => {
      const { metrics: list } = (await cdp.send('Performance.getMetrics')) as {
        metrics: { name: string; value: number }[];
      };
      return Object.fromEntries(list.map((m) => [m.name, m.value]));
    };
    const before = await metrics();
    const sentBefore = sent;
    await page.evaluate(() => {
      (window as unknown as { __bench: { on: boolean } }).__bench.on = true;
    });
    await page.waitForTimeout(SECONDS * 1000);
    const stats = await page.evaluate(() => {
      const b = (window as unknown as { __bench: PageStats & { on: boolean } }).__bench;
      b.on = false;
      return b as PageStats;
    });
    const after = await metrics();
    // Two cores shared with whatever else runs: the load average says how much the figures can be trusted.
    const load = loadavg()[0];
    const busy = (name: string) => (((after[name] ?? 0) - (before[name] ?? 0)) / SECONDS) * 100;
    const offered = sent - sentBefore;
    const d = [...stats.delays].sort((a, b) => a - b);
    const pd = [...stats.paintDelays].sort((a, b) => a - b);
    const loaf = Math.max(0, ...stats.loaf);
    console.log(
      `measured ${SECONDS} s after a ${WARMUP_S} s warm-up; ${offered} updates sent (${f1(offered / SECONDS)}/s)`,
    );
    console.log(`updates displayed: ${d.length}; machine load average (1 min) at the end: ${load.toFixed(2)}`);
    console.log(
      `arrival -> DOM:        p50 ${f1(pct(d, 50))} ms  p95 ${f1(pct(d, 95))} ms  p99 ${f1(pct(d, 99))} ms  max ${f1(d[d.length - 1])} ms`,
    );
    console.log(
      `arrival -> next frame: p50 ${f1(pct(pd, 50))} ms  p95 ${f1(pct(pd, 95))} ms  p99 ${f1(pct(pd, 99))} ms  max ${f1(pd[pd.length - 1])} ms`,
    );
    console.log(
      `frames: ${stats.frames} (${f1(stats.frames / SECONDS)}/s); longest rAF gap ${f1(stats.maxRafGap)} ms; gaps > 50 ms: ${stats.slowFrames}; long animation frames (>= 50 ms): ${stats.loaf.length}, longest ${f1(loaf)} ms`,
    );
    console.log(
      `main thread busy ${f1(busy('TaskDuration'))}% of the time: script ${f1(busy('ScriptDuration'))}%, style ${f1(busy('RecalcStyleDuration'))}%, layout ${f1(busy('LayoutDuration'))}%`,
    );
    for (const line of stats.loafDetail) console.log(`  long frame ${line}`);
    // After a full collection, so the figure is what the page keeps, not garbage not yet collected.
    await cdp.send('HeapProfiler.collectGarbage');
    const heap = await page.evaluate(
      () => (performance as unknown as { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? 0,
    );
    if (heap > 0)
      console.log(
        `JS heap after a full GC: ${(heap / 1048576).toFixed(1)} MiB (includes this benchmark's own sample arrays)`,
      );
  } finally {
    clearInterval(feeder);
    await browser.close();
    gw.close();
    await dash.stop();
    await broker.stop();
  }
}

await main();
