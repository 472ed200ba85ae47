// Waiting on events instead of sleeping: every wait has a named timeout.

export const DEFAULT_WAIT_MS = 5000;

/**
 * Resolves once `condition()` returns (or resolves to) a truthy value, which is returned; polls every 10 ms.
 * Async conditions (an HTTP poll, say) are awaited before they are judged.
 */
export async function waitFor<T>(
  condition: () => T,
  what: string,
  timeoutMs = DEFAULT_WAIT_MS,
): Promise<NonNullable<Awaited<T>>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<Awaited<T>>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Waits a bounded time for something that must NOT happen; only for negative checks. */
export function settle(ms = 200): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
