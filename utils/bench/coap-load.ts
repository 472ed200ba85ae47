// Load generator for `npm run bench:coap`, run as a child process (fork): each one holds up to a few thousand
// UDP sockets (under the 20,000-open-files limit) from its own 127.0.0.x source address. Every socket is one
// simulated RIOT node: it beacons and posts from the socket it serves discovery on, as gcoap does, so the
// gateway sees each node at its own address and port. CoAP is hand-encoded here (a few bytes of header) so the
// generator stays cheap next to the gateway it measures.
import { createSocket, type Socket } from 'node:dgram';

export interface LoadConfig {
  gatewayHost: string;
  gatewayPort: number;
  localAddress: string;
  count: number;
  /** uid prefix; node i is `${prefix}${first + i}`. */
  prefix: string;
  first: number;
  beaconMs: number;
  valueMs: number;
  /** First beacons spread over this long. */
  rampMs: number;
}

export type LoadMessage =
  | { type: 'ready'; sockets: number }
  | { type: 'stats'; beacons: number; values: number; acked: number; errors: number; served: number }
  | { type: 'stopped'; nodes: Array<[string, number]> };

export type ParentMessage =
  | { type: 'values' }
  | { type: 'stop'; fraction: number }
  | { type: 'stats' }
  /** Everything falls silent (end of run), so sent and counted totals can be compared. */
  | { type: 'halt' };

const CON = 0;
const NON = 1;
const ACK = 2;
const POST = 0x02;
const GET = 0x01;
const CHANGED = 0x44; // 2.04
const CONTENT = 0x45; // 2.05
const URI_PATH = 11;

/** A confirmable POST with a 2-byte token and one Uri-Path segment (RFC 7252 §3). */
function post(mid: number, path: 'alive' | 'server', payload: string): Buffer {
  const p = Buffer.from(payload, 'utf8');
  const buf = Buffer.allocUnsafe(4 + 2 + 1 + path.length + 1 + p.length);
  buf[0] = 0x40 | (CON << 4) | 2;
  buf[1] = POST;
  buf.writeUInt16BE(mid & 0xffff, 2);
  buf.writeUInt16BE(mid & 0xffff, 4); // token
  buf[6] = (URI_PATH << 4) | path.length;
  buf.write(path, 7, 'latin1');
  buf[7 + path.length] = 0xff;
  p.copy(buf, 8 + path.length);
  return buf;
}

/** Uri-Path of a request, joined with "/" (RFC 7252 §3.1 option encoding). */
function uriPath(msg: Buffer, tkl: number): { path: string; payloadAt: number } {
  let i = 4 + tkl;
  let number = 0;
  const parts: string[] = [];
  while (i < msg.length && msg[i] !== 0xff) {
    let delta = msg[i] >> 4;
    let len = msg[i] & 0x0f;
    i++;
    if (delta === 13) delta = 13 + msg[i++];
    else if (delta === 14) {
      delta = 269 + msg.readUInt16BE(i);
      i += 2;
    }
    if (len === 13) len = 13 + msg[i++];
    else if (len === 14) {
      len = 269 + msg.readUInt16BE(i);
      i += 2;
    }
    number += delta;
    if (number === URI_PATH) parts.push(msg.toString('utf8', i, i + len));
    i += len;
  }
  return { path: parts.join('/'), payloadAt: i };
}

function answer(req: Buffer, tkl: number, code: number, payload: string, type = ACK): Buffer {
  const p = Buffer.from(payload, 'utf8');
  const buf = Buffer.allocUnsafe(4 + tkl + 1 + p.length);
  buf[0] = 0x40 | (type << 4) | tkl;
  buf[1] = code;
  buf[2] = req[2];
  buf[3] = req[3];
  req.copy(buf, 4, 4, 4 + tkl);
  buf[4 + tkl] = 0xff;
  p.copy(buf, 5 + tkl);
  return buf;
}

const LINKS = '</name>;ct=0,</temperature>;ct=0';

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]) as LoadConfig;
  const sockets: Socket[] = [];
  const uids: string[] = [];
  /** Time of each node's last post: the gateway counts beacons and value posts as signs of life. */
  const lastSent = new Float64Array(cfg.count);
  const mids = new Uint16Array(cfg.count);
  let active = cfg.count;
  let beacons = 0;
  let values = 0;
  let acked = 0;
  let errors = 0;
  let served = 0;
  let sendValues = false;

  for (let i = 0; i < cfg.count; i++) {
    const uid = `${cfg.prefix}${cfg.first + i}`;
    uids.push(uid);
    const s = createSocket({ type: 'udp4' });
    s.on('error', () => {
      errors++;
    });
    s.on('message', (msg, rinfo) => {
      if (msg.length < 4) return;
      const type = (msg[0] >> 4) & 3;
      const tkl = msg[0] & 0x0f;
      if (type === ACK) {
        if (msg[1] === CHANGED) acked++;
        return;
      }
      if ((type === CON || type === NON) && msg[1] === GET) {
        if (i >= active) return; // a stopped node answers nothing
        const { path } = uriPath(msg, tkl);
        const body = path === '.well-known/core' ? LINKS : path === 'name' ? 'Bench Node' : '21.5°C';
        served++;
        // The gateway's reachability probe is a NON GET: answered NON (RFC 7252 §5.2.3).
        s.send(answer(msg, tkl, CONTENT, body, type === NON ? NON : ACK), rinfo.port, rinfo.address);
      }
    });
    await new Promise<void>((resolve) => s.bind(0, cfg.localAddress, () => resolve()));
    sockets.push(s);
  }

  const send = (i: number, path: 'alive' | 'server', payload: string) => {
    mids[i] = (mids[i] + 1) & 0xffff;
    sockets[i].send(post(mids[i], path, payload), cfg.gatewayPort, cfg.gatewayHost);
    lastSent[i] = Date.now();
  };
  const beacon = (i: number) => {
    send(i, 'alive', `alive:${uids[i]}`);
    beacons++;
  };

  // Each node has a fixed phase in each period; a 10 ms tick sends for the nodes whose phase just passed.
  const start = Date.now();
  let rampDone = 0;
  let beaconPos = 0;
  let valuePos = 0;
  let valueStart = 0;
  const TICK_MS = 10;
  const timer = setInterval(() => {
    const now = Date.now();
    if (rampDone < cfg.count) {
      const due = Math.min(cfg.count, Math.floor(((now - start) / cfg.rampMs) * cfg.count));
      for (; rampDone < due; rampDone++) beacon(rampDone);
      return;
    }
    const bTarget = Math.floor(((now - start - cfg.rampMs) / cfg.beaconMs) * cfg.count);
    for (; beaconPos < bTarget; beaconPos++) {
      const i = beaconPos % cfg.count;
      if (i < active) beacon(i);
    }
    if (!sendValues) return;
    const vTarget = Math.floor(((now - valueStart) / cfg.valueMs) * cfg.count);
    for (; valuePos < vTarget; valuePos++) {
      const i = valuePos % cfg.count;
      if (i < active) {
        send(i, 'server', `temperature:${20 + (valuePos % 10)}.5°C`);
        values++;
      }
    }
  }, TICK_MS);

  const stats = (): LoadMessage => ({ type: 'stats', beacons, values, acked, errors, served });
  process.on('message', (m: ParentMessage) => {
    if (m.type === 'values') {
      sendValues = true;
      valueStart = Date.now();
    } else if (m.type === 'stats') process.send!(stats());
    else if (m.type === 'halt') active = 0;
    else if (m.type === 'stop') {
      // The last `fraction` of the nodes fall silent: no beacon, no value, no answer.
      const keep = Math.floor(cfg.count * (1 - m.fraction));
      active = keep;
      const stopped: Array<[string, number]> = [];
      for (let i = keep; i < cfg.count; i++) stopped.push([uids[i], lastSent[i]]);
      process.send!({ type: 'stopped', nodes: stopped } satisfies LoadMessage);
    }
  });
  process.on('disconnect', () => {
    clearInterval(timer);
    for (const s of sockets) s.close();
  });
  process.send!({ type: 'ready', sockets: sockets.length } satisfies LoadMessage);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
