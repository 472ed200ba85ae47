// Which node a refused gateway frame was about. A frame that is a JSON object with a string `type` and a `uid`
// but fails the shape or identifier rules concerns one node only: the broker answers it with an `error` frame
// naming that uid and keeps the link (finding 3 of issue 10), so one bad datagram cannot cut a gateway off.
import { MAX_ID_LENGTH, parseJson, stringifySafe } from '../protocol/schema.ts';

/**
 * The uid named by a refused frame, as a string of at most MAX_ID_LENGTH characters (it may be garbage: it is
 * only echoed back), or undefined when the frame is not a JSON object with a string type and a uid.
 * Runs only for refused frames, so the second parse costs nothing on the hot path.
 */
export function refusedFrameUid(text: string): string | undefined {
  const json = parseJson(text);
  if (!json.ok || typeof json.value !== 'object' || json.value === null || Array.isArray(json.value)) return undefined;
  const frame = json.value as Record<string, unknown>;
  if (typeof frame.type !== 'string' || !Object.hasOwn(frame, 'uid')) return undefined;
  const uid = typeof frame.uid === 'string' ? frame.uid : (stringifySafe(frame.uid) ?? '');
  return uid.slice(0, MAX_ID_LENGTH);
}
