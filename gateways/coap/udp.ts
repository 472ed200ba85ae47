// UDP sockets for CoAP: dual-stack where the host has IPv6.
import { createSocket, type Socket } from 'node:dgram';

/** Binds a UDP socket; "::" is dual-stack, and falls back to IPv4 where the host has no IPv6. */
export async function bindUdp(host: string, port: number): Promise<Socket> {
  const v6 = host.includes(':');
  try {
    return await bindOnce(v6 ? 'udp6' : 'udp4', host, port);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL' || code === 'EPROTONOSUPPORT')) {
      return bindOnce('udp4', '0.0.0.0', port);
    }
    throw err;
  }
}

function bindOnce(type: 'udp4' | 'udp6', host: string, port: number): Promise<Socket> {
  const socket = createSocket({ type, ipv6Only: false });
  return new Promise<Socket>((resolve, reject) => {
    const onError = (err: Error) => {
      socket.close();
      reject(err);
    };
    socket.once('error', onError);
    socket.bind(port, host, () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

export function closeUdp(socket: Socket | undefined): Promise<void> {
  if (socket === undefined) return Promise.resolve();
  return new Promise<void>((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}
