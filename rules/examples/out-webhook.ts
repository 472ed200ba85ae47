// Watchdog (rhizo-server's controller watchdog): call a webhook when a node has been out for longer than
// OUT_FOR_MS. The `out` event notes when the node left, `new` clears it, and a schedule checks once a minute.
// The webhook's host must be in the service's --http-allow.
import { rule } from '../../services/rules/rule.ts';

const NODES = '*';
const OUT_FOR_MS = 10 * 60_000;
const WEBHOOK = 'http://localhost:9000/hooks/node-out';
const CHECK = '1m';

type Outage = { at: number; reason: string; notified: boolean };

export default rule({
  name: 'out-webhook',
  description: `webhook when a node is out for more than ${OUT_FOR_MS / 60_000} minutes`,
  on: { out: { node: NODES }, new: { node: NODES }, schedule: { every: CHECK } },
  async run(event, ctx) {
    if (event.type === 'out') {
      ctx.state.set(`out:${event.uid}`, { at: event.at, reason: event.reason, notified: false });
      return;
    }
    if (event.type === 'new') {
      ctx.state.delete(`out:${event.uid}`);
      return;
    }
    if (event.type !== 'schedule') return;
    for (const key of ctx.state.keys()) {
      const outage = ctx.state.get<Outage>(key);
      if (outage === undefined || outage.notified || event.at - outage.at < OUT_FOR_MS) continue;
      const uid = key.slice('out:'.length);
      const res = await ctx.http(WEBHOOK, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ uid, outSince: new Date(outage.at).toISOString(), reason: outage.reason }),
      });
      if (res.status < 300) ctx.state.set(key, { ...outage, notified: true });
      else ctx.log.warn(`webhook answered ${res.status} for ${uid}`);
    }
  },
});
