// How the WebSocket gateway learns a node's resources (pyaiot-protocol §6): the node is announced when its
// connection is adopted, and asked with pyaiot's discover frame; it answers with `update` frames (or sends them
// unasked). The same frame asks again after a broker outage or when the core wants the node rediscovered.
import { DISCOVER_FRAME } from './codec.ts';
import { type NodeSession, NodeSocket } from './node-session.ts';

/** Sends pyaiot's discover request; false when the socket is no longer open. */
export function askForResources(session: NodeSession): boolean {
  if (session.ws.readyState !== NodeSocket.OPEN) return false;
  session.ws.send(DISCOVER_FRAME);
  return true;
}
