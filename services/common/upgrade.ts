// Authentication before the WebSocket upgrade (see the ws README, "client authentication"): the token is
// checked on the HTTP request, and a refusal is a plain HTTP 401 with the reason, never a 101 then a close.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

export type RefusalStatus = 400 | 401 | 403 | 404 | 429 | 503;

const STATUS_TEXT: Record<RefusalStatus, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  429: 'Too Many Requests',
  503: 'Service Unavailable',
};

export function refuseUpgrade(socket: Duplex, status: RefusalStatus, reason: string): void {
  const text = STATUS_TEXT[status];
  const body = `${reason}\n`;
  const headers = [
    `HTTP/1.1 ${status} ${text}`,
    'Connection: close',
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
  ];
  if (status === 401) headers.push(`WWW-Authenticate: Bearer error="invalid_token", error_description="${reason}"`);
  if (socket.writable) socket.end(`${headers.join('\r\n')}\r\n\r\n${body}`);
  socket.destroy();
}

/** The request path without its query string. */
export function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}
