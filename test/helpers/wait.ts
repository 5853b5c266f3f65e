// Waiting without sleeping a fixed time: polling until something is so, and timing a call.

/** Resolves once `condition` holds, polling every `everyMs` (5 ms); throws after `ms`. */
export async function until(condition: () => boolean | Promise<boolean>, what: string, ms = 10_000, everyMs = 5): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(everyMs);
  }
}

/**
 * Polls `probe` every `everyMs` until its value is `ok` or `ms` pass, and returns the last value
 * read: the test asserts on it, so a miss shows what was there instead.
 */
export async function settle<T>(probe: () => T | Promise<T>, ok: (value: T) => boolean, ms: number, everyMs: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (ok(value) || Date.now() > deadline) return value;
    await Bun.sleep(everyMs);
  }
}

/** Resolves with the result and how long it took. */
export async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work();
  return { value, ms: performance.now() - started };
}
