// After the garbage: does each service still answer? One small probe per protocol, and the RSS of a process.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { encodeCoap, mqttConnect } from './garbage.ts';

/** Resident set size of a process in bytes, from /proc/<pid>/status (Linux). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * Sends a confirmable CoAP POST /alive beacon and resolves with the response code ("2.04", "4.29"...) of the
 * answer that carries its message id, or undefined when none came within `timeoutMs`.
 */
export function coapBeacon(
  port: number,
  uid: string,
  timeoutMs: number,
  host = '127.0.0.1',
): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const mid = Math.floor(Math.random() * 0xffff);
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    const finish = (code: string | undefined) => {
      clearTimeout(timer);
      s.close();
      resolve(code);
    };
    s.on('error', () => finish(undefined));
    s.on('message', (msg) => {
      if (msg.length >= 4 && msg.readUInt16BE(2) === mid)
        finish(`${msg[1] >> 5}.${String(msg[1] & 0x1f).padStart(2, '0')}`);
    });
    const datagram = encodeCoap({
      type: 0,
      code: 2,
      mid,
      token: Buffer.from([1, 2, 3, 4]),
      options: [{ number: 11, value: Buffer.from('alive') }],
      payload: Buffer.from(`alive:${uid}`),
    });
    s.send(datagram, port, host);
  });
}

/** Sends an anonymous MQTT CONNECT; resolves with the CONNACK return code, or undefined without a CONNACK. */
export function mqttConnack(port: number, timeoutMs: number, host = '127.0.0.1'): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    const finish = (code: number | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(code);
    };
    socket.on('error', () => finish(undefined));
    socket.on('close', () => finish(undefined));
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      // CONNACK: 0x20, remaining length 2, session present, return code ([MQTT-3.2]).
      if (buf.length >= 4 && buf[0] === 0x20) finish(buf[3]);
    });
    socket.once('connect', () => socket.write(mqttConnect(`probe-${process.pid}`)));
  });
}
