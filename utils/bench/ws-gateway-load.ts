// Load generator for `npm run bench:ws-gateway`, run as a child process (fork) so that each one stays under the
// 20,000 open files a process may hold. It opens `count` node connections from its own source address
// (127.0.0.x, ~28k ephemeral ports each), answers the gateway's discover request like a pyaiot node, and on
// `run` sends every node's update once per interval, spread evenly, carrying the send time for latency.
// Shared handlers (`this` = the socket) and one timer keep the generator itself light.
import { readPrivateKey } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';
import WebSocket from 'ws';

interface LoadArgs {
  url: string;
  count: number;
  first: number;
  localAddress: string;
  keyFile?: string;
  intervalMs: number;
  concurrency: number;
  prefix: string;
}

export type LoaderMessage =
  | { type: 'progress'; open: number; failed: number }
  | { type: 'ready'; open: number; failed: number; errors: Record<string, number>; ms: number }
  | { type: 'sent'; updates: number; closed: number };

const TICK_MS = 50;
const HANDSHAKE_TIMEOUT_MS = 60_000;
const PROGRESS_EVERY_MS = 1000;

const args = JSON.parse(process.argv[2]) as LoadArgs;
const sockets: WebSocket[] = [];
const errors: Record<string, number> = {};
let failed = 0;
let closed = 0;
let updates = 0;

function send(msg: LoaderMessage): void {
  process.send?.(msg);
}

const DISCOVER_ANSWER = JSON.stringify({ type: 'update', data: { name: 'bench', os: 'load', led: '0' } });

function onMessage(this: WebSocket, data: WebSocket.RawData): void {
  // The only frames a bench node gets are discover requests (and writes, which it ignores).
  if (data.toString().includes('discover')) this.send(DISCOVER_ANSWER);
}
function onClose(): void {
  closed++;
}
function onError(this: WebSocket, err: Error & { code?: string }): void {
  const key = err.code ?? err.message.slice(0, 60);
  errors[key] = (errors[key] ?? 0) + 1;
}

async function tokens(): Promise<(string | undefined)[]> {
  if (args.keyFile === undefined) return new Array(args.count).fill(undefined);
  const key = readPrivateKey(args.keyFile);
  const out: string[] = [];
  for (let i = 0; i < args.count; i++) {
    out.push(await mintToken(key, { role: 'node', sub: `${args.prefix}${args.first + i}`, ttlSeconds: 3600 }));
  }
  return out;
}

function open(i: number, token: string | undefined): Promise<void> {
  const uid = `${args.prefix}${args.first + i}`;
  const url = token === undefined ? `${args.url}?id=${uid}` : args.url;
  return new Promise((resolve) => {
    const ws = new WebSocket(url, {
      localAddress: args.localAddress,
      perMessageDeflate: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    });
    ws.on('error', onError);
    ws.once('open', () => {
      sockets.push(ws);
      ws.on('message', onMessage);
      ws.on('close', onClose);
      resolve();
    });
    ws.once('close', () => {
      if (ws.readyState !== WebSocket.OPEN && !sockets.includes(ws)) {
        failed++;
        resolve();
      }
    });
  });
}

async function connectAll(): Promise<void> {
  const toks = await tokens();
  const started = Date.now();
  let next = 0;
  const progress = setInterval(() => send({ type: 'progress', open: sockets.length, failed }), PROGRESS_EVERY_MS);
  // A fixed number of handshakes in flight: fast, without flooding the gateway's accept backlog.
  const lane = async () => {
    while (next < args.count) {
      const i = next++;
      await open(i, toks[i]);
    }
  };
  await Promise.all(Array.from({ length: args.concurrency }, lane));
  clearInterval(progress);
  send({ type: 'ready', open: sockets.length, failed, errors, ms: Date.now() - started });
}

let ticker: NodeJS.Timeout | undefined;
function run(): void {
  // Every node sends once per interval, round-robin over the sockets so the load is flat rather than bursty.
  // What is due is computed from the clock, not from tick counts: a loader whose timer runs late on a busy
  // machine catches up instead of silently offering less load.
  const started = performance.now();
  let cursor = 0;
  let sent = 0;
  ticker = setInterval(() => {
    const due = Math.floor(((performance.now() - started) * sockets.length) / args.intervalMs) - sent;
    for (let k = 0; k < due && sockets.length > 0; k++) {
      const ws = sockets[cursor];
      cursor = (cursor + 1) % sockets.length;
      sent++;
      if (ws.readyState !== WebSocket.OPEN) continue;
      ws.send(`{"type":"update","data":{"bench":${performance.timeOrigin + performance.now()}}}`);
      updates++;
    }
  }, TICK_MS);
}

process.on('message', (msg: { type: string }) => {
  if (msg.type === 'run') run();
  if (msg.type === 'report') send({ type: 'sent', updates, closed });
  if (msg.type === 'stop') {
    clearInterval(ticker);
    for (const ws of sockets) ws.terminate();
    setTimeout(() => process.exit(0), 200);
  }
});

connectAll().catch((err) => {
  console.error(err);
  process.exit(1);
});
