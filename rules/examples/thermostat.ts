// Thermostat: when a greenhouse sensor reports a temperature above the limit, turn the fan's LED on; below the
// limit minus a hysteresis, turn it off. Writes only on a change (the last command is kept in ctx.state).
import { rule } from '../../services/rules/rule.ts';

const SENSORS = 'greenhouse-*';
const FAN = 'fan-1';
const LIMIT = 30;
const HYSTERESIS = 2;

export default rule({
  name: 'thermostat',
  description: `fan ${FAN} on above ${LIMIT} °C, off below ${LIMIT - HYSTERESIS} °C`,
  on: { update: { node: SENSORS, resource: 'temperature', when: (e) => Number.isFinite(Number(e.value)) } },
  async run(event, ctx) {
    if (event.type !== 'update') return;
    const t = Number(event.value);
    const last = ctx.state.get<string>('fan');
    const want = t > LIMIT ? '1' : t < LIMIT - HYSTERESIS ? '0' : last;
    if (want === undefined || want === last) return;
    const r = await ctx.write(FAN, 'led', want);
    if (r.result === 'ok' || r.result === 'delivered') ctx.state.set('fan', want);
    else ctx.log.warn(`fan write failed: ${r.result}`, { reason: r.reason ?? null });
  },
});
