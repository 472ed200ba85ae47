// Load generator for `npm run bench:mqtt`: one process holding many simulated MQTT nodes. Each node is a bare
// TCP socket speaking just enough MQTT 3.1.1 (CONNECT, QoS 1 PUBLISH; reads CONNACK and PUBACK), so the load
// generator costs little CPU next to the gateway it measures. Every node sends node/check at start and every
// 30 s, and `node/<id>/temperature` {"value": <send time in ms>} every --interval seconds with a random phase.
// Reports progress to the parent as JSON lines on stdout.
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { readPrivateKey } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'key-file': { type: 'string' },
    first: { type: 'string', default: '0' },
    count: { type: 'string', default: '1000' },
    interval: { type: 'string', default: '5' },
    'check-interval': { type: 'string', default: '30' },
    'connect-rate': { type: 'string', default: '1000' },
    'local-address': { type: 'string', default: '127.0.0.1' },
  },
});

const PORT = Number(args.port);
const FIRST = Number(args.first);
const COUNT = Number(args.count);
const INTERVAL_MS = Number(args.interval) * 1000;
const CHECK_MS = Number(args['check-interval']) * 1000;
const CONNECT_RATE = Number(args['connect-rate']);
const KEEPALIVE_S = 60;
const TOKEN_TTL_S = 3600;

function report(msg: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

/** MQTT variable byte integer ([MQTT-2.2.3]). */
function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function connectPacket(clientId: string, username: string, password: string): Buffer {
  // [MQTT-3.1.2]: protocol name, level 4, flags user+password+clean session, keep alive.
  const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0xc2, KEEPALIVE_S >> 8, KEEPALIVE_S & 0xff]);
  const body = Buffer.concat([variable, str(clientId), str(username), str(password)]);
  return Buffer.concat([Buffer.from([0x10, ...varint(body.length)]), body]);
}

function publishPacket(topic: string, payload: string, packetId: number): Buffer {
  const t = str(topic);
  const p = Buffer.from(payload, 'utf8');
  const len = t.length + 2 + p.length;
  const header = Buffer.from([0x32, ...varint(len)]); // PUBLISH, QoS 1
  const id = Buffer.from([packetId >> 8, packetId & 0xff]);
  return Buffer.concat([header, t, id, p]);
}

interface SimNode {
  id: string;
  socket: Socket;
  connected: boolean;
  nextId: number;
  pending: Buffer;
  timers: NodeJS.Timeout[];
}

let connected = 0;
let refused = 0;
let closed = 0;
let published = 0;
let acked = 0;
const nodes: SimNode[] = [];

function publish(node: SimNode, topic: string, payload: string): void {
  if (!node.connected) return;
  node.nextId = node.nextId === 65535 ? 1 : node.nextId + 1;
  node.socket.write(publishPacket(topic, payload, node.nextId));
  published++;
}

/** Reads CONNACK (0x20) and PUBACK (0x40) packets; everything arriving is one of those. */
function onData(node: SimNode, chunk: Buffer): void {
  let buf = node.pending.length ? Buffer.concat([node.pending, chunk]) : chunk;
  while (buf.length >= 2) {
    const type = buf[0] >> 4;
    const len = buf[1]; // CONNACK and PUBACK have remaining length 2
    if (buf.length < 2 + len) break;
    if (type === 2) {
      const rc = buf[3];
      if (rc === 0) {
        node.connected = true;
        connected++;
        startNode(node);
      } else {
        refused++;
        report({ refused: node.id, rc });
      }
    } else if (type === 4) {
      acked++;
    }
    buf = buf.subarray(2 + len);
  }
  node.pending = buf.length ? Buffer.from(buf) : Buffer.alloc(0);
}

function startNode(node: SimNode): void {
  const check = JSON.stringify({ id: node.id });
  const valueTopic = `node/${node.id}/temperature`;
  publish(node, 'node/check', check);
  publish(node, `node/${node.id}/resources`, '["temperature"]');
  const phase = Math.random() * INTERVAL_MS;
  setTimeout(() => {
    const send = () =>
      publish(node, valueTopic, `{"value":${(performance.timeOrigin + performance.now()).toFixed(3)}}`);
    send();
    setInterval(send, INTERVAL_MS);
  }, phase);
  setTimeout(() => setInterval(() => publish(node, 'node/check', check), CHECK_MS), Math.random() * CHECK_MS);
}

const RECONNECT_DELAY_MS = 1000;
let stopping = false;
let retries = 0;
const tokens: string[] = [];
let addresses: string[] = [];

/**
 * One simulated node's connection. A connection that fails or closes (the gateway drops a CONNECT it could not
 * process within its connect timeout when it is saturated) is retried, as a real device would.
 */
function open(j: number): void {
  const id = `bench-${FIRST + j}`;
  const socket = connect({ host: '127.0.0.1', port: PORT, localAddress: addresses[j % addresses.length] });
  const node: SimNode = { id, socket, connected: false, nextId: 0, pending: Buffer.alloc(0), timers: [] };
  nodes[j] = node;
  socket.setNoDelay(true);
  socket.on('connect', () => socket.write(connectPacket(id, id, tokens[j])));
  socket.on('data', (c: Buffer) => onData(node, c));
  socket.on('error', () => {});
  socket.on('close', () => {
    if (node.connected) {
      closed++;
      connected--;
    }
    node.connected = false;
    for (const t of node.timers) clearInterval(t);
    if (!stopping) {
      retries++;
      setTimeout(() => open(j), RECONNECT_DELAY_MS);
    }
  });
}

async function main(): Promise<void> {
  const key = readPrivateKey(args['key-file'] as string);
  addresses = (args['local-address'] as string).split(',');
  for (let i = 0; i < COUNT; i++) {
    tokens.push(await mintToken(key, { role: 'node', sub: `bench-${FIRST + i}`, ttlSeconds: TOKEN_TTL_S }));
  }
  report({ tokens: COUNT });
  const batch = Math.max(1, Math.round(CONNECT_RATE / 100));
  for (let i = 0; i < COUNT; i += batch) {
    for (let j = i; j < Math.min(COUNT, i + batch); j++) open(j);
    await new Promise((r) => setTimeout(r, 10));
  }
  const progress = setInterval(() => report({ connected, refused, closed, retries, published, acked }), 1000);
  process.on('SIGTERM', () => {
    stopping = true;
    clearInterval(progress);
    for (const n of nodes) n.socket.destroy();
    report({ connected, refused, closed, retries, published, acked, done: true });
    process.exit(0);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
