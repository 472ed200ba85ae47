// A derived value: the average temperature of a group of nodes, published on a virtual node of the rules
// service. It shows up in the dashboard and the history like any node.
import { rule } from '../../services/rules/rule.ts';

const GROUP = 'room-*';
const VIRTUAL = 'rooms-average';

export default rule({
  name: 'average',
  description: `the average temperature of ${GROUP}, on ${VIRTUAL}`,
  on: { update: { node: GROUP, resource: 'temperature' } },
  async run(_event, ctx) {
    const values: number[] = [];
    for (const node of await ctx.nodes(GROUP)) {
      const t = Number(node.resources.temperature);
      if (node.status === 'online' && Number.isFinite(t)) values.push(t);
    }
    if (values.length === 0) return;
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    await ctx.emit(VIRTUAL, 'temperature', Math.round(mean * 100) / 100);
    await ctx.emit(VIRTUAL, 'count', values.length);
  },
});
