// A loopback port free a moment ago, for a server that must be told its address before it starts (mosquitto's
// config file, a broker that must list the origin of a dashboard that must know the broker's URL first).
import { once } from 'node:events';
import { createServer } from 'node:net';

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
