// How hard the fuzz suite pushes. `npm test` (CI) runs the bounded defaults; `npm run test:fuzz` raises them
// through the environment, so one set of tests serves both and the long run finds what the short one cannot.

/** fast-check runs per property in CI: a few seconds for all parser properties together. */
export const CI_PROPERTY_RUNS = 1000;
/** Garbage inputs per protocol against `mycelium up` in CI (the issue asks for at least 10,000). */
export const CI_GARBAGE_INPUTS = 10_000;
/** Seed of the CI garbage run: fixed, so a CI failure replays exactly. The long run picks a fresh one. */
export const CI_GARBAGE_SEED = 0x6d796365;

function positiveInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Runs per property: FUZZ_RUNS, else the CI default scaled by `weight` (expensive properties pass < 1). */
export function propertyRuns(weight = 1): number {
  return Math.max(1, Math.round((positiveInt('FUZZ_RUNS') ?? CI_PROPERTY_RUNS) * weight));
}

/** Garbage inputs per protocol: FUZZ_INPUTS, else the CI default. */
export function garbageInputs(): number {
  return positiveInt('FUZZ_INPUTS') ?? CI_GARBAGE_INPUTS;
}

/** A long run's seed when FUZZ_SEED is not set: fresh per process, so each long run tries new inputs. */
const freshSeed = 1 + Math.floor(Math.random() * 0x7ffffffe);

/**
 * Seed of the garbage run: FUZZ_SEED, else the fixed CI seed, else (long run) a fresh one. The test prints
 * it in its title and summary, so a failure replays with FUZZ_SEED=<seed>.
 */
export function garbageSeed(): number {
  return positiveInt('FUZZ_SEED') ?? (longRun() ? freshSeed : CI_GARBAGE_SEED);
}

/** True under `npm run test:fuzz`: tests may allow themselves a longer timeout. */
export function longRun(): boolean {
  return positiveInt('FUZZ_INPUTS') !== undefined || positiveInt('FUZZ_RUNS') !== undefined;
}
