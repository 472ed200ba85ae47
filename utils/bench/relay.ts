// The practical ceiling for the broker benchmark: a bare `ws` relay that broadcasts every frame received on
// /gw to every client on /ws, with no authentication, no validation and no state. Run: relay.ts <port>
import { createServer } from 'node:http';
import { type WebSocket, WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? 0);
const clients = new Set<WebSocket>();
const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  if (req.url?.startsWith('/ws')) {
    clients.add(ws);
    ws.on('close', () => clients.delete(ws));
    return;
  }
  ws.on('message', (data, isBinary) => {
    for (const c of clients) c.send(data, { binary: isBinary });
  });
});
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
