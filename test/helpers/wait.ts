// Waiting on events instead of sleeping: every wait has a named timeout.

export const DEFAULT_WAIT_MS = 5000;

/** Resolves once `condition()` returns a truthy value (which is returned), polling every 10 ms. */
export async function waitFor<T>(
  condition: () => T | undefined | false | null,
  what: string,
  timeoutMs = DEFAULT_WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Waits a bounded time for something that must NOT happen; only for negative checks. */
export function settle(ms = 200): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
