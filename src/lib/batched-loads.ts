import type DataLoader from "dataloader";

/**
 * How the hot reads of a handshake are gathered (access-guard.ts, realtime.ts): every load asked
 * for until the event loop has handled the I/O at hand (setImmediate, not DataLoader's default of
 * one microtask tick: each handshake arrives as a request of its own) goes out as one statement,
 * at most `maxBatchSize` keys in it. No cache: each caller keeps what it must, and says how stale
 * it may be.
 */
export const batchedLoads = <K, V>(): DataLoader.Options<K, V> => ({
  cache: false,
  maxBatchSize: 1_000,
  batchScheduleFn: (load) => void setImmediate(load),
});
