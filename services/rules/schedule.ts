// Schedules of rules: `every: '5m'` (a fixed period counted from the service's start) or a five-field cron
// expression (minute hour day-of-month month day-of-week, UTC). A small parser of our own: the five standard
// fields with `*`, lists, ranges and steps (`*/15`, `1-5`, `0,30`), as in POSIX crontab; no names, no seconds.
// As in Vixie cron, when both day fields are restricted a day matching either one fires.

const PERIOD = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** Shortest period a schedule may have: a rule firing every few ms is a loop, not a schedule. */
export const MIN_PERIOD_MS = 1000;

/** A period like `30s`, `5m`, `2h`, `1d` in ms; undefined when it is not one. */
export function parsePeriod(text: string): number | undefined {
  const m = PERIOD.exec(text.trim());
  if (m === null) return undefined;
  const ms = Number(m[1]) * (UNIT_MS[m[2]] as number);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

export interface Cron {
  minutes: Set<number>;
  hours: Set<number>;
  days: Set<number>;
  months: Set<number>;
  weekdays: Set<number>;
  daysRestricted: boolean;
  weekdaysRestricted: boolean;
}

const FIELDS: Array<[string, number, number]> = [
  ['minute', 0, 59],
  ['hour', 0, 23],
  ['day of month', 1, 31],
  ['month', 1, 12],
  ['day of week', 0, 7],
];

function parseField(text: string, name: string, min: number, max: number): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\*|\d+(?:-\d+)?)(?:\/(\d+))?$/.exec(part);
    if (m === null) throw new Error(`cron ${name}: "${part}" is not a number, range, list or step`);
    let lo = min;
    let hi = max;
    if (m[1] !== '*') {
      const [a, b] = (m[1] as string).split('-').map(Number) as [number, number | undefined];
      lo = a;
      hi = b ?? (m[2] === undefined ? a : max);
    }
    const step = m[2] === undefined ? 1 : Number(m[2]);
    if (lo < min || hi > max || lo > hi) throw new Error(`cron ${name}: ${part} is outside ${min}-${max}`);
    if (step < 1) throw new Error(`cron ${name}: the step must be at least 1`);
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

export function parseCron(expression: string): Cron {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== 5) throw new Error(`a cron expression has 5 fields, got ${parts.length}`);
  const sets = parts.map((p, i) => {
    const [name, min, max] = FIELDS[i] as [string, number, number];
    return parseField(p, name, min, max);
  });
  const weekdays = sets[4] as Set<number>;
  if (weekdays.delete(7)) weekdays.add(0); // 7 is Sunday too
  return {
    minutes: sets[0] as Set<number>,
    hours: sets[1] as Set<number>,
    days: sets[2] as Set<number>,
    months: sets[3] as Set<number>,
    weekdays,
    daysRestricted: parts[2] !== '*',
    weekdaysRestricted: parts[4] !== '*',
  };
}

function dayMatches(c: Cron, d: Date): boolean {
  const dom = c.days.has(d.getUTCDate());
  const dow = c.weekdays.has(d.getUTCDay());
  if (c.daysRestricted && c.weekdaysRestricted) return dom || dow;
  return dom && dow;
}

/** The first minute strictly after `after` (epoch ms) that the expression matches; undefined beyond 5 years. */
export function nextCron(c: Cron, after: number): number | undefined {
  const d = new Date(Math.floor(after / 60_000) * 60_000 + 60_000);
  const limit = after + 5 * 366 * 86_400_000;
  while (d.getTime() <= limit) {
    if (!c.months.has(d.getUTCMonth() + 1)) {
      d.setUTCMonth(d.getUTCMonth() + 1, 1);
      d.setUTCHours(0, 0);
      continue;
    }
    if (!dayMatches(c, d)) {
      d.setUTCDate(d.getUTCDate() + 1);
      d.setUTCHours(0, 0);
      continue;
    }
    if (!c.hours.has(d.getUTCHours())) {
      d.setUTCHours(d.getUTCHours() + 1, 0);
      continue;
    }
    if (!c.minutes.has(d.getUTCMinutes())) {
      d.setUTCMinutes(d.getUTCMinutes() + 1);
      continue;
    }
    return d.getTime();
  }
  return undefined;
}

/** A schedule as a function from "now" to the next firing time. */
export type NextFire = (after: number) => number | undefined;

/** Checks a trigger's schedule; throws with the reason when it is not one. */
export function compileSchedule(s: { every?: unknown; cron?: unknown }): NextFire {
  if (typeof s.every === 'string') {
    const period = parsePeriod(s.every);
    if (period === undefined) throw new Error(`every: "${s.every}" is not a period like 30s, 5m, 2h or 1d`);
    if (period < MIN_PERIOD_MS) throw new Error(`every: the period must be at least ${MIN_PERIOD_MS} ms`);
    return (after) => after + period;
  }
  if (typeof s.cron === 'string') {
    const cron = parseCron(s.cron);
    return (after) => nextCron(cron, after);
  }
  throw new Error('schedule needs every (a period) or cron (an expression)');
}
