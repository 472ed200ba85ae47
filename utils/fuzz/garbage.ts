// Garbage inputs for every port of `mycelium up`, one protocol per generator. Each input is what one fresh
// connection (or one datagram) carries. The mix is: pure random bytes, valid messages with random damage, and
// well-formed messages that carry hostile content (deep JSON, control characters, prototype names, huge
// lengths), so both the wire parsers and the application layer behind them are exercised. No I/O here.
import type { Rng } from './rng.ts';

/** Hostile values an application layer must refuse without crashing. */
export function hostileJson(rng: Rng): string {
  switch (rng.int(0, 9)) {
    case 0:
      return `${'['.repeat(7000)}${']'.repeat(7000)}`;
    case 1:
      return `${'{"a":'.repeat(rng.int(33, 3000))}1`;
    case 2:
      return JSON.stringify({ __proto__: { polluted: true }, constructor: { prototype: 1 } }).replace(
        '"constructor"',
        '"__proto__"',
      );
    case 3:
      return `"${'\\u0000'.repeat(rng.int(1, 50))}"`;
    case 4:
      return JSON.stringify(rng.text(rng.int(0, 200)));
    case 5:
      return String(rng.pick([1e308, -0, 'NaN', '1e999', '-', '01', '"\ud800"']));
    case 6:
      return `{"x":${'9'.repeat(rng.int(300, 3000))}}`;
    case 7:
      return rng.text(rng.int(0, 100));
    case 8:
      return JSON.stringify(Object.fromEntries(Array.from({ length: rng.int(1, 400) }, (_, i) => [`r${i}`, i])));
    default:
      return '{}';
  }
}

function hostileName(rng: Rng): string {
  return rng.pick([
    '__proto__',
    'constructor',
    'prototype',
    'x\u0001y',
    'x\u0085y',
    '',
    'a'.repeat(rng.int(250, 5000)),
    '+',
    '#',
    'a/b',
    rng.text(rng.int(1, 20)),
    `fuzz-${rng.int(0, 1_000_000)}`,
  ]);
}

// ---------------------------------------------------------------------------------------------------------
// CoAP (RFC 7252 §3): 4-byte header, token, options as delta/length nibbles, 0xff, payload.

interface CoapOption {
  number: number;
  value: Buffer;
}

function nibble(n: number): { nib: number; ext: number[] } {
  if (n < 13) return { nib: n, ext: [] };
  if (n < 269) return { nib: 13, ext: [n - 13] };
  return { nib: 14, ext: [((n - 269) >> 8) & 0xff, (n - 269) & 0xff] };
}

export function encodeCoap(m: {
  type: number;
  code: number;
  mid: number;
  token: Buffer;
  options: CoapOption[];
  payload?: Buffer;
}): Buffer {
  const parts: Buffer[] = [
    Buffer.from([0x40 | ((m.type & 3) << 4) | (m.token.length & 0xf), m.code, (m.mid >> 8) & 0xff, m.mid & 0xff]),
    m.token,
  ];
  let last = 0;
  for (const o of [...m.options].sort((a, b) => a.number - b.number)) {
    const d = nibble(o.number - last);
    const l = nibble(o.value.length);
    parts.push(Buffer.from([(d.nib << 4) | l.nib, ...d.ext, ...l.ext]), o.value);
    last = o.number;
  }
  if (m.payload !== undefined && m.payload.length > 0) parts.push(Buffer.from([0xff]), m.payload);
  return Buffer.concat(parts);
}

const URI_PATH = 11;
const CONTENT_FORMAT = 12;
const code = (c: number, d: number) => (c << 5) | d;
const POST = code(0, 2);

function coapPost(rng: Rng, path: string, payload: string): Buffer {
  return encodeCoap({
    type: rng.pick([0, 0, 1]),
    code: POST,
    mid: rng.int(0, 0xffff),
    token: rng.bytes(rng.int(0, 8)),
    options: [
      { number: URI_PATH, value: Buffer.from(path) },
      ...(rng.chance(0.3) ? [{ number: CONTENT_FORMAT, value: Buffer.from([0]) }] : []),
    ],
    payload: Buffer.from(payload),
  });
}

/** One UDP datagram for the CoAP gateway. */
export function coapGarbage(rng: Rng): Buffer {
  switch (rng.int(0, 9)) {
    case 0:
      return rng.bytes(rng.int(0, 300));
    case 1: {
      // A valid header with garbage options and payload.
      const h = Buffer.from([
        0x40 | (rng.int(0, 3) << 4) | rng.int(0, 8),
        rng.int(0, 255),
        rng.int(0, 255),
        rng.int(0, 255),
      ]);
      return Buffer.concat([h, rng.bytes(rng.int(0, 200))]);
    }
    case 2: {
      // Huge option delta/length: nibble 14 announces up to 65,804 bytes the datagram does not hold; 15 is reserved.
      const h = Buffer.from([0x40, POST, rng.int(0, 255), rng.int(0, 255)]);
      const opt = rng.chance(0.5) ? [0xee, 0xff, 0xff, 0xff, 0xff] : [rng.pick([0xf0, 0x0f, 0xff, 0xdd, 0xe0])];
      return Buffer.concat([h, Buffer.from(opt), rng.bytes(rng.int(0, 20))]);
    }
    case 3:
      // Reserved token lengths 9-15 (RFC 7252 §3: message format error).
      return Buffer.concat([Buffer.from([0x40 | rng.int(9, 15), POST, 0, 1]), rng.bytes(rng.int(0, 30))]);
    case 4:
      return coapPost(
        rng,
        rng.pick(['alive', 'server']),
        `${rng.pick(['alive:', 'reset:', 'Alive:'])}${hostileName(rng)}`,
      );
    case 5:
      return coapPost(rng, 'server', `${hostileName(rng)}:${hostileJson(rng)}`);
    case 6:
      return rng.mutate(coapPost(rng, rng.pick(['alive', 'server']), `alive:fuzz-${rng.int(0, 50)}`));
    case 7:
      // Valid beacons naming the demo node and a few fixed uids: a takeover attempt from a foreign address.
      return coapPost(
        rng,
        'alive',
        `${rng.pick(['alive:', 'reset:'])}${rng.pick(['demo-coap', 'demo-ws', 'demo-mqtt'])}`,
      );
    case 8:
      return coapPost(rng, rng.text(rng.int(0, 30)), rng.text(rng.int(0, 100)));
    default:
      // An empty message (ping, RFC 7252 §4.3) or reset with random mid, and GET of random paths.
      return encodeCoap({
        type: rng.int(0, 3),
        code: rng.pick([0, 1, code(0, 3), code(0, 4), code(2, 5), code(4, 4)]),
        mid: rng.int(0, 0xffff),
        token: rng.bytes(rng.int(0, 8)),
        options: rng.chance(0.5) ? [{ number: rng.int(0, 3000), value: rng.bytes(rng.int(0, 300)) }] : [],
      });
  }
}

// ---------------------------------------------------------------------------------------------------------
// MQTT 3.1.1 (OASIS §2-3): fixed header, remaining length varint, payload.

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

function mqttString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([Buffer.from([(b.length >> 8) & 0xff, b.length & 0xff]), b]);
}

function mqttPacket(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first, ...varint(body.length)]), body]);
}

export interface MqttCredentials {
  username: string;
  password: string;
}

export function mqttConnect(clientId: string, creds?: MqttCredentials, level = 4): Buffer {
  const flags = 0x02 | (creds ? 0xc0 : 0);
  const body = Buffer.concat([
    mqttString('MQTT'),
    Buffer.from([level, flags, 0, 30]),
    mqttString(clientId),
    ...(creds ? [mqttString(creds.username), mqttString(creds.password)] : []),
  ]);
  return mqttPacket(0x10, body);
}

function mqttPublish(topic: string, payload: Buffer, qos = 0): Buffer {
  const id = qos > 0 ? Buffer.from([0, 1]) : Buffer.alloc(0);
  return mqttPacket(0x30 | (qos << 1), Buffer.concat([mqttString(topic), id, payload]));
}

/** One connection's worth of bytes for the embedded MQTT broker; `node` is a real node's credentials. */
export function mqttGarbage(rng: Rng, node: MqttCredentials): Buffer {
  const connectAsNode = () => mqttConnect(rng.chance(0.5) ? node.username : `${node.username}/${rng.int(0, 9)}`, node);
  switch (rng.int(0, 9)) {
    case 0:
      return rng.bytes(rng.int(1, 300));
    case 1:
      // Bad remaining length: five continuation bytes ([MQTT-2.2.3] allows four), or 256 MB announced.
      return Buffer.from(rng.chance(0.5) ? [0x10, 0xff, 0xff, 0xff, 0xff, 0x7f] : [0x10, 0xff, 0xff, 0xff, 0x7f, 1, 2]);
    case 2:
      // A CONNECT with a bad protocol name, level or reserved flag ([MQTT-3.1.2-1..3]).
      return rng.mutate(mqttConnect(`fuzz-${rng.int(0, 999)}`, undefined, rng.pick([3, 4, 5, 0, 255])));
    case 3:
      // Valid CONNECT, bad credentials (random user, a mangled token, a foreign id for a real token).
      return mqttConnect(`c${rng.int(0, 9999)}`, {
        username: rng.pick([hostileName(rng), node.username, 'demo-mqtt']),
        password: rng.pick([rng.text(rng.int(0, 100)), node.password.slice(0, -2), `${node.password}x`, '']),
      });
    case 4:
      // Packets before CONNECT ([MQTT-3.1.0-1]: the first packet must be CONNECT).
      return mqttPublish(`node/${hostileName(rng)}/x`, Buffer.from(hostileJson(rng)));
    case 5:
      // Truncated CONNECT.
      return mqttConnect('trunc', node).subarray(0, rng.int(1, 20));
    case 6:
    case 7: {
      // A real node connection followed by hostile publishes: deep JSON, bad topics, bad resource lists.
      const pubs: Buffer[] = [connectAsNode()];
      for (let i = rng.int(1, 4); i > 0; i--) {
        const topic = rng.pick([
          `node/${node.username}/${hostileName(rng)}`,
          `node/${node.username}/resources`,
          `node/${node.username}/temperature`,
          'node/check',
          `node/${hostileName(rng)}/x`,
          `gateway/${node.username}/discover`,
          '#',
          '',
        ]);
        const payload = rng.pick([
          () => `{"value":${hostileJson(rng)}}`,
          () => hostileJson(rng),
          () => JSON.stringify([hostileName(rng), hostileName(rng)]),
          () => JSON.stringify({ id: hostileName(rng) }),
        ])();
        pubs.push(mqttPublish(topic, Buffer.from(payload), rng.int(0, 2)));
      }
      return Buffer.concat(pubs);
    }
    case 8:
      // A real connection, then random packets of every type (reserved 0 and 15 included).
      return Buffer.concat([connectAsNode(), mqttPacket(rng.int(0, 255), rng.bytes(rng.int(0, 100)))]);
    default:
      // SUBSCRIBE with hostile filters after a real CONNECT.
      return Buffer.concat([
        connectAsNode(),
        mqttPacket(
          0x82,
          Buffer.concat([
            Buffer.from([0, 2]),
            mqttString(rng.pick(['#', '$SYS/#', 'node/+/+', hostileName(rng)])),
            Buffer.from([rng.int(0, 3)]),
          ]),
        ),
      ]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// WebSocket (RFC 6455 §5.2) frames, sent raw after a valid upgrade, and garbage before an upgrade.

/** A client frame; `mask` false breaks [RFC 6455 §5.1] (clients must mask), `claim` lies about the length. */
export function wsFrame(
  opcode: number,
  payload: Buffer,
  opts: { fin?: boolean; mask?: boolean; rsv?: number; claim?: number } = {},
): Buffer {
  const fin = opts.fin ?? true;
  const mask = opts.mask ?? true;
  const len = opts.claim ?? payload.length;
  const head: number[] = [(fin ? 0x80 : 0) | ((opts.rsv ?? 0) << 4) | (opcode & 0xf)];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, (len >> 8) & 0xff, len & 0xff);
  else {
    head.push(m | 127);
    const big = BigInt(len);
    for (let i = 7; i >= 0; i--) head.push(Number((big >> BigInt(i * 8)) & 0xffn));
  }
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from(head), key, masked]);
}

/** Which WebSocket endpoint an input targets, and with what token. */
export interface WsTarget {
  port: number;
  path: string;
  token: string;
  /** Frames that make sense to this endpoint's application layer, as seeds for hostile ones. */
  frames: readonly string[];
}

export interface WsInput {
  target: WsTarget;
  /** Bytes sent instead of a valid upgrade request (garbage before the upgrade); else a valid upgrade. */
  preUpgrade?: Buffer;
  /** Bytes sent after the 101. */
  frames: Buffer;
}

function hostileFrameText(rng: Rng, target: WsTarget): string {
  const seed = rng.pick(target.frames);
  switch (rng.int(0, 4)) {
    case 0:
      return seed.replace(/"(uid|endpoint|id)":"[^"]*"/, `"$1":${JSON.stringify(hostileName(rng))}`);
    case 1:
      return seed.replace(/"(data|payload)":[^,}]*/, `"$1":${hostileJson(rng)}`);
    case 2:
      return hostileJson(rng);
    case 3:
      return seed.slice(0, rng.int(0, seed.length));
    default:
      return `{"type":${JSON.stringify(hostileName(rng))}}`;
  }
}

export function wsGarbage(rng: Rng, targets: readonly WsTarget[]): WsInput {
  const target = rng.pick(targets);
  switch (rng.int(0, 9)) {
    case 0:
      return { target, preUpgrade: rng.bytes(rng.int(1, 400)), frames: Buffer.alloc(0) };
    case 1:
      // An upgrade request cut short, or with a broken key or version.
      return {
        target,
        preUpgrade: rng.mutate(
          Buffer.from(upgradeRequest(target, rng.chance(0.5) ? 'bad key' : 'dGhlIHNhbXBsZSBub25jZQ==')),
        ),
        frames: Buffer.alloc(0),
      };
    case 2:
      return { target, frames: rng.bytes(rng.int(1, 300)) };
    case 3:
      // Truncated: the header announces more than follows.
      return { target, frames: wsFrame(1, Buffer.from('{"type":"new"'), { claim: rng.int(20, 60_000) }) };
    case 4:
      // Oversized: a length far beyond any limit (up to 2^53), with a little data behind it.
      return {
        target,
        frames: wsFrame(rng.pick([1, 2]), rng.bytes(rng.int(0, 64)), {
          claim: rng.pick([1 << 24, 2 ** 31, 2 ** 53 - 1]),
        }),
      };
    case 5:
      // Protocol errors: unmasked client frame, reserved bits, reserved opcodes, fragmented control frames.
      return {
        target,
        frames: rng.pick([
          () => wsFrame(1, Buffer.from(rng.pick(target.frames)), { mask: false }),
          () => wsFrame(1, Buffer.from('{}'), { rsv: rng.int(1, 7) }),
          () => wsFrame(rng.pick([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), rng.bytes(rng.int(0, 20))),
          () => wsFrame(9, rng.bytes(200)),
          () => wsFrame(8, rng.bytes(rng.int(0, 10)), { fin: rng.chance(0.5) }),
          () => Buffer.concat([wsFrame(1, Buffer.from('{"ty'), { fin: false }), wsFrame(1, Buffer.from('pe"'))]),
        ])(),
      };
    case 6:
      // Text that is not UTF-8 ([RFC 6455 §8.1]: close 1007).
      return { target, frames: wsFrame(1, Buffer.from([0x7b, 0xc3, 0x28, 0xff, 0xfe, 0x7d])) };
    default: {
      // Well-formed frames with hostile application content: the layer behind the wire parser.
      const parts: Buffer[] = [];
      for (let i = rng.int(1, 4); i > 0; i--)
        parts.push(wsFrame(rng.pick([1, 1, 1, 2]), Buffer.from(hostileFrameText(rng, target))));
      return { target, frames: Buffer.concat(parts) };
    }
  }
}

export function upgradeRequest(target: WsTarget, key = 'dGhlIHNhbXBsZSBub25jZQ=='): string {
  return [
    `GET ${target.path} HTTP/1.1`,
    `Host: 127.0.0.1:${target.port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${key}`,
    'Sec-WebSocket-Version: 13',
    `Authorization: Bearer ${target.token}`,
    '',
    '',
  ].join('\r\n');
}

// ---------------------------------------------------------------------------------------------------------
// HTTP/1.1 with bad headers (RFC 9112), for the broker, the dashboard and the WebSocket gateway.

export interface HttpTarget {
  port: number;
  /** Paths this server serves, as seeds. */
  paths: readonly string[];
  /** A bearer token this server accepts, so hostile bodies reach the handlers. */
  token?: string;
}

export function httpGarbage(rng: Rng, target: HttpTarget): Buffer {
  const path = rng.pick(target.paths);
  const host = `Host: 127.0.0.1:${target.port}`;
  const auth = target.token !== undefined && rng.chance(0.7) ? `Authorization: Bearer ${target.token}` : 'X-A: b';
  const req = (lines: string[], body = '') => Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`, 'latin1');
  switch (rng.int(0, 11)) {
    case 0:
      return rng.bytes(rng.int(1, 400));
    case 1:
      return req([`GET ${path} HTTP/1.1`, host, `X-Big: ${'a'.repeat(rng.int(16_000, 100_000))}`]);
    case 2:
      return req([`GET ${path} HTTP/1.1`, host, 'no colon here', `${rng.text(10)}: ${rng.text(20)}`]);
    case 3:
      // Request smuggling shapes: conflicting lengths, chunked and length together.
      return req(
        [
          `POST ${path} HTTP/1.1`,
          host,
          auth,
          'Content-Length: 5',
          rng.pick(['Content-Length: 7', 'Transfer-Encoding: chunked']),
          'Content-Type: application/json',
        ],
        '0\r\n\r\nGET / HTTP/1.1\r\n\r\n',
      );
    case 4:
      return req(
        [`PUT ${path} HTTP/1.1`, host, auth, 'Transfer-Encoding: chunked', 'Content-Type: application/json'],
        `${rng.pick(['zz', 'ffffffffffff', '-1', '5'])}\r\n${rng.text(10)}\r\n`,
      );
    case 5:
      // An absurd Content-Length with a short body: the server must not wait forever or allocate it.
      return req(
        [
          `PUT ${path} HTTP/1.1`,
          host,
          auth,
          `Content-Length: ${rng.pick(['99999999999', '-1', '1e9', '0x10', ' 12'])}`,
          'Content-Type: application/json',
        ],
        '{"a":',
      );
    case 6:
      return req([
        `${rng.pick(['GET', 'BREW', 'G\u0000T', 'PRI', 'CONNECT', 'TRACE', rng.text(5)])} ${path} HTTP/${rng.pick(['1.1', '0.9', '9.9', '1.1x', ''])}`,
        host,
      ]);
    case 7:
      return req([
        `GET ${rng.pick(['/../../etc/passwd', '/%00', '/%zz', `/${'a/'.repeat(5000)}`, `/?${'a=1&'.repeat(5000)}`, '//', '*', 'http://evil/'])} HTTP/1.1`,
        host,
      ]);
    case 8: {
      // Hostile JSON bodies on the REST API, with the right headers and a token.
      const body = hostileJson(rng);
      return req(
        [
          `${rng.pick(['PUT', 'POST'])} ${path} HTTP/1.1`,
          host,
          auth,
          `Content-Type: ${rng.pick(['application/json', 'text/plain', 'application/x-www-form-urlencoded', rng.text(8)])}`,
          `Content-Length: ${Buffer.byteLength(body, 'latin1')}`,
        ],
        body,
      );
    }
    case 9:
      // An upgrade without a key, with a bad version, or to a path that has no WebSocket.
      return req([
        `GET ${path} HTTP/1.1`,
        host,
        'Upgrade: websocket',
        'Connection: Upgrade',
        rng.pick(['Sec-WebSocket-Version: 99', 'Sec-WebSocket-Key:', 'Sec-WebSocket-Key: x']),
        auth,
      ]);
    case 10:
      return req([
        `GET ${path} HTTP/1.1`,
        host,
        `Authorization: ${rng.pick(['Bearer', 'Bearer ', `Bearer ${rng.text(50)}`, 'Basic Og==', `Bearer ${'a.'.repeat(3000)}`])}`,
      ]);
    default:
      // Valid request cut at a random point.
      return req([`GET ${path} HTTP/1.1`, host, auth, 'Accept: */*']).subarray(0, rng.int(1, 60));
  }
}
