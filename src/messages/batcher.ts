/**
 * Group commit's scheduling, on its own (pure: no database, unit-tested in test/batcher.test.ts).
 * Items arriving together go out as one batch. A batch closes at `maxRows`, or `windowMs` after its
 * first item arrived. Up to `maxInFlight` batches run at once, but never two holding the same key
 * (a channel): a key's items run, and settle, in the order they were queued.
 */
export interface Batcher<T> {
  /** Queues `item`; `run` gets it in a batch. */
  add(item: T): void;
}

export function createBatcher<T>(options: {
  keyOf: (item: T) => number;
  /** Runs one batch (items in queue order); the batch's keys are free again once it settles. Must not throw. */
  run: (batch: T[]) => Promise<void>;
  maxRows: number;
  windowMs: number;
  maxInFlight: number;
}): Batcher<T> {
  const { keyOf, run, maxRows, windowMs, maxInFlight } = options;
  let queue: { item: T; queuedAt: number }[] = [];
  /** Keys of the batches running: their next items wait for the next batch. */
  const busy = new Set<number>();
  let inFlight = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  /** The items the next batch may take: in order, none of a busy key, at most `maxRows`. */
  function eligible() {
    const taken: typeof queue = [];
    for (const queued of queue) {
      if (busy.has(keyOf(queued.item))) continue;
      taken.push(queued);
      if (taken.length === maxRows) break;
    }
    return taken;
  }

  /** Starts every batch that is due, or makes sure the next one starts once it is. */
  function schedule(): void {
    while (inFlight < maxInFlight && queue.length > 0) {
      const batch = eligible();
      if (batch.length === 0) return;
      const age = performance.now() - batch[0]!.queuedAt;
      if (batch.length < maxRows && age < windowMs) {
        timer ??= setTimeout(() => {
          timer = undefined;
          schedule();
        }, windowMs - age);
        return;
      }
      const taken = new Set(batch);
      queue = queue.filter((queued) => !taken.has(queued));
      const keys = new Set(batch.map((queued) => keyOf(queued.item)));
      for (const key of keys) busy.add(key);
      inFlight++;
      void run(batch.map((queued) => queued.item)).finally(() => {
        for (const key of keys) busy.delete(key);
        inFlight--;
        schedule();
      });
    }
  }

  return {
    add(item) {
      queue.push({ item, queuedAt: performance.now() });
      schedule();
    },
  };
}
