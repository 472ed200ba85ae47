// A nightly console command on every agent (the device console, issue 12): at 03:00 UTC, run `uptime` on each
// online node that advertises the console (a `console` resource) and keep the answers in ctx.state.
import { rule } from '../../services/rules/rule.ts';

const COMMAND = 'uptime';
const AT = '0 3 * * *';

export default rule({
  name: 'nightly-exec',
  description: `${COMMAND} on every agent at 03:00 UTC`,
  on: { schedule: { cron: AT } },
  timeLimitMs: 200,
  async run(event, ctx) {
    if (event.type !== 'schedule') return;
    const agents = (await ctx.nodes('*')).filter((n) => n.status === 'online' && 'console' in n.resources);
    for (const agent of agents) {
      const exit = await ctx.exec(agent.uid, COMMAND, {}, { timeoutMs: 10_000 });
      ctx.state.set(`last:${agent.uid}`, {
        at: event.at,
        status: exit.status,
        output: exit.output.slice(0, 200),
        ...(exit.reason === undefined ? {} : { reason: exit.reason }),
      });
      if (exit.status !== 'ok')
        ctx.log.warn(`${COMMAND} on ${agent.uid}: ${exit.status}`, { reason: exit.reason ?? null });
    }
  },
});
