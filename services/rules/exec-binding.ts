// The one place ctx.exec meets the device console (issue 12): the rules service needs only `ExecClient`; this
// file binds it to console-core's bus client, `execOnNode` (services/console/exec-client.ts).
import type { Bus } from '../bus/bus.ts';
import { execOnNode } from '../console/exec-client.ts';
import type { ExecOutcome } from './rule.ts';

/** Output a rule receives from one command at most (the rest is cut, `truncated` says so). */
export const MAX_EXEC_OUTPUT = 64 * 1024;

export interface ExecClientRequest {
  uid: string;
  gateway: string;
  command: string;
  params: Record<string, string>;
  timeoutMs?: number;
  requester: { sub: string; role: 'admin' | 'operator' };
  /** Aborted when the caller gives up (e.g. the rule's invocation ended): the command is cancelled on the device. */
  signal?: AbortSignal;
}

export interface ExecClient {
  exec(req: ExecClientRequest): Promise<ExecOutcome>;
}

export function bindExec(bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>): ExecClient {
  return {
    async exec(req) {
      let output = '';
      let truncated = false;
      const { signal, ...request } = req;
      const call = execOnNode(
        bus,
        { ...request, mode: 'output' },
        (f) => {
          if (output.length < MAX_EXEC_OUTPUT) output += f.data;
          else truncated = true;
        },
        signal === undefined ? {} : { signal },
      );
      const exit = await call.done;
      return {
        status: exit.status,
        code: exit.code,
        output: output.slice(0, MAX_EXEC_OUTPUT),
        truncated: truncated || exit.truncated,
        ...(exit.reason === undefined ? {} : { reason: exit.reason }),
      };
    },
  };
}
