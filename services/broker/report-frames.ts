// [gw-reports] Which report a refused gateway frame was: a JSON object whose `type` is `inventory`, `status` or
// `action-result` but fails its checks is refused alone (an error frame, counted), and the gateway's link stays:
// a wrong report must not cut a gateway's nodes off. Runs only for refused frames.
import { parseJson } from '../protocol/schema.ts';

const REPORT_TYPES: ReadonlySet<string> = new Set(['inventory', 'status', 'action-result']);

export function refusedReportType(text: string): string | undefined {
  const json = parseJson(text);
  if (!json.ok || typeof json.value !== 'object' || json.value === null || Array.isArray(json.value)) return undefined;
  const type = (json.value as Record<string, unknown>).type;
  return typeof type === 'string' && REPORT_TYPES.has(type) ? type : undefined;
}
