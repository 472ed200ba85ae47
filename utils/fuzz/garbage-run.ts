// The garbage run: sends generated inputs (garbage.ts) to every port of a running `mycelium up`, over
// loopback, a bounded number of connections at a time. Used by test/fuzz/garbage.test.ts for both the CI run
// and `npm run test:fuzz` (FUZZ_INPUTS, FUZZ_SEED). It only sends and counts; judging the service afterwards
// is the caller's job.
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import {
  coapGarbage,
  type HttpTarget,
  httpGarbage,
  type MqttCredentials,
  mqttGarbage,
  upgradeRequest,
  type WsInput,
  type WsTarget,
  wsGarbage,
} from './garbage.ts';
import { Rng } from './rng.ts';

export interface UpPorts {
  broker: number;
  ws: number;
  mqtt: number;
  dashboard: number;
  coap: number;
}

export interface FuzzTokens {
  operator: string;
  gateway: string;
  /** A node token and its subject: the WebSocket node and the MQTT node the garbage poses as. */
  node: { sub: string; token: string };
}

export type Protocol = 'coap' | 'mqtt' | 'ws' | 'http';

export interface ProtocolStats {
  inputs: number;
  /** TCP: connections the server accepted; UDP: datagrams sent. */
  delivered: number;
  /** Inputs that drew at least one byte back. */
  answered: number;
  /** Connections that failed to open (refused, reset before connect). */
  failed: number;
  ms: number;
}

export interface GarbageRunOptions {
  host?: string;
  ports: UpPorts;
  tokens: FuzzTokens;
  inputsPerProtocol: number;
  seed: number;
  /** Connections open at once per protocol. */
  concurrency?: number;
  /** Longest a connection is kept after its input was sent, waiting for the server to close it. */
  lingerMs?: number;
  protocols?: readonly Protocol[];
}

export const DEFAULT_CONCURRENCY = 64;
export const DEFAULT_LINGER_MS = 500;
/** Datagrams sent before yielding, so the gateway's receive buffer is not simply overrun. */
const UDP_BATCH = 16;

export async function runGarbage(options: GarbageRunOptions): Promise<Record<Protocol, ProtocolStats>> {
  const host = options.host ?? '127.0.0.1';
  const { ports, tokens } = options;
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  const linger = options.lingerMs ?? DEFAULT_LINGER_MS;
  const n = options.inputsPerProtocol;
  const protocols = options.protocols ?? (['coap', 'mqtt', 'ws', 'http'] as const);
  const seedOf = (p: Protocol) => (options.seed ^ { coap: 0x11, mqtt: 0x22, ws: 0x33, http: 0x44 }[p]) >>> 0;

  const wsTargets: WsTarget[] = [
    {
      port: ports.broker,
      path: '/ws',
      token: tokens.operator,
      frames: [
        '{"type":"new","data":"client"}',
        '{"type":"update","id":"w1","data":{"uid":"demo-ws","endpoint":"led","payload":"1"}}',
      ],
    },
    {
      port: ports.broker,
      path: '/gw',
      token: tokens.gateway,
      frames: [
        '{"type":"new","uid":"fuzz-gw-node","protocol":"fuzz","data":{"led":0}}',
        '{"type":"update","uid":"fuzz-gw-node","endpoint":"led","data":1}',
        '{"type":"out","uid":"fuzz-gw-node","reason":"timeout"}',
        '{"type":"result","id":"w1","result":"ok"}',
      ],
    },
    {
      port: ports.ws,
      path: '/node',
      token: tokens.node.token,
      frames: [
        '{"type":"update","data":{"led":0,"temperature":21}}',
        '{"type":"hello","ack":true}',
        '{"type":"ack","id":"w1","result":"ok"}',
      ],
    },
  ];
  const httpTargets: HttpTarget[] = [
    {
      port: ports.broker,
      token: tokens.operator,
      paths: [
        '/healthz',
        '/metrics',
        '/api/v1/nodes',
        '/api/v1/nodes/demo-ws',
        '/api/v1/nodes/demo-ws/resources/led',
        '/ws',
        '/gw',
      ],
    },
    { port: ports.dashboard, paths: ['/', '/index.html', '/assets/x.js', '/config.js', '/favicon.ico'] },
    { port: ports.ws, token: tokens.node.token, paths: ['/node', '/metrics', '/healthz', '/'] },
  ];
  const mqttNode: MqttCredentials = { username: tokens.node.sub, password: tokens.node.token };

  const runs: Record<Protocol, () => Promise<ProtocolStats>> = {
    coap: () => blastUdp(host, ports.coap, n, new Rng(seedOf('coap'))),
    mqtt: () => {
      const rng = new Rng(seedOf('mqtt'));
      return blastTcp(n, concurrency, () =>
        sendTcp(host, ports.mqtt, mqttGarbage(rng, mqttNode), rng.chance(0.1), linger),
      );
    },
    ws: () => {
      const rng = new Rng(seedOf('ws'));
      return blastTcp(n, concurrency, () => sendWs(host, wsGarbage(rng, wsTargets), rng.chance(0.1), linger));
    },
    http: () => {
      const rng = new Rng(seedOf('http'));
      return blastTcp(n, concurrency, () => {
        const target = rng.pick(httpTargets);
        return sendTcp(host, target.port, httpGarbage(rng, target), rng.chance(0.1), linger);
      });
    },
  };
  // One protocol after another: a failure then points at one protocol, and the two cores are not swamped.
  const out = {} as Record<Protocol, ProtocolStats>;
  for (const p of protocols) out[p] = await runs[p]();
  return out;
}

interface Outcome {
  delivered: boolean;
  answered: boolean;
}

async function blastTcp(n: number, concurrency: number, one: () => Promise<Outcome>): Promise<ProtocolStats> {
  const start = Date.now();
  const stats: ProtocolStats = { inputs: 0, delivered: 0, answered: 0, failed: 0, ms: 0 };
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      stats.inputs++;
      const o = await one();
      if (o.delivered) stats.delivered++;
      else stats.failed++;
      if (o.answered) stats.answered++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  stats.ms = Date.now() - start;
  return stats;
}

/** Opens a connection, lets `drive` write, then waits (at most `linger`) for the server to close it. */
function withSocket(
  host: string,
  port: number,
  linger: number,
  drive: (socket: Socket, answered: () => void) => void,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const outcome: Outcome = { delivered: false, answered: false };
    const socket = connect({ host, port });
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    socket.on('error', () => {});
    socket.once('close', done);
    socket.once('connect', () => {
      outcome.delivered = true;
      timer = setTimeout(done, linger);
      drive(socket, () => {
        outcome.answered = true;
      });
    });
  });
}

function sendTcp(host: string, port: number, input: Buffer, abort: boolean, linger: number): Promise<Outcome> {
  return withSocket(host, port, linger, (socket, answered) => {
    socket.on('data', answered);
    socket.write(input);
    // Mostly a half-close (the server sees EOF after the input); sometimes a reset right after the write.
    if (abort) socket.resetAndDestroy();
    else socket.end();
  });
}

function sendWs(host: string, input: WsInput, abort: boolean, linger: number): Promise<Outcome> {
  return withSocket(host, input.target.port, linger, (socket, answered) => {
    if (input.preUpgrade !== undefined) {
      socket.on('data', answered);
      socket.write(input.preUpgrade);
      socket.end();
      return;
    }
    let head = '';
    const onData = (chunk: Buffer) => {
      answered();
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.resume();
      if (!head.startsWith('HTTP/1.1 101')) {
        socket.end();
        return;
      }
      socket.write(input.frames);
      if (abort) socket.resetAndDestroy();
      else socket.end();
    };
    socket.on('data', onData);
    socket.write(upgradeRequest(input.target));
  });
}

async function blastUdp(host: string, port: number, n: number, rng: Rng): Promise<ProtocolStats> {
  const start = Date.now();
  const stats: ProtocolStats = { inputs: 0, delivered: 0, answered: 0, failed: 0, ms: 0 };
  // Several source ports, so the gateway sees several "devices" at one address.
  const sockets = await Promise.all(
    Array.from({ length: 8 }, async () => {
      const s = createSocket('udp4');
      s.on('message', () => {
        stats.answered++;
      });
      s.on('error', () => {
        stats.failed++;
      });
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
      return s;
    }),
  );
  try {
    for (let i = 0; i < n; i++) {
      const s = sockets[i % sockets.length];
      stats.inputs++;
      await new Promise<void>((resolve) =>
        s.send(coapGarbage(rng), port, host, (err) => {
          if (err) stats.failed++;
          else stats.delivered++;
          resolve();
        }),
      );
      if (i % UDP_BATCH === UDP_BATCH - 1) await new Promise((r) => setTimeout(r, 1));
    }
    // Late answers (discovery requests to our sockets, separate responses) still count for a moment.
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    for (const s of sockets) s.close();
  }
  stats.ms = Date.now() - start;
  return stats;
}
