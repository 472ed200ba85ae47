// The one place ctx.exec meets the device console (issue 12). The rules service needs only `ExecClient`; the
// binding to console-core's bus client, `execOnNode` (services/console/exec-client.ts), is not in this branch:
// until the merge, exec answers `refused`. At the merge, replace this file with exec-binding.ts.after-merge
// (it type-checks against console-core a2b00b6) and rename test/rules-exec.test.ts.after-merge to
// test/rules-exec.test.ts (ctx.exec on a real `mycelium agent`; it passed on a scratch checkout of console-core
// with this branch's services/rules).
import type { Bus } from '../bus/bus.ts';
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
}

export interface ExecClient {
  exec(req: ExecClientRequest): Promise<ExecOutcome>;
}

export function bindExec(_bus: Pick<Bus, 'request' | 'subscribe' | 'publish'>): ExecClient {
  return {
    async exec() {
      return {
        status: 'refused',
        code: null,
        output: '',
        truncated: false,
        reason: 'the device console (issue 12) is not part of this build',
      };
    },
  };
}
