import type { Db } from "../lib/db.ts";
import type { Logger } from "../lib/logger.ts";
import { pruneEvents } from "./channel-log.ts";

/** At most this long between prunes; with a short retention, four per retention period. */
const MAX_INTERVAL_MS = 10 * 60_000;

/**
 * Keeps the channel event log to EVENT_LOG_RETENTION_HOURS (api.md §11): every instance prunes on
 * its own schedule, which is harmless (a delete of what is already gone deletes nothing). A client
 * asking for events older than that is told `limited` (REST) or `resync` (socket).
 */
export function schedulePruning({ db, retentionHours, logger }: { db: Db; retentionHours: number; logger: Logger }) {
  const intervalMs = Math.max(100, Math.min(MAX_INTERVAL_MS, (retentionHours * 3_600_000) / 4));
  let running: Promise<unknown> | undefined;
  const prune = () => {
    running ??= pruneEvents(db, retentionHours)
      .then((count) => count > 0 && logger.info({ count }, "old events pruned from the channel log"))
      .catch((error) => logger.warn({ err: error }, "the channel log could not be pruned (tried again later)"))
      .finally(() => (running = undefined));
    return running;
  };
  const timer = setInterval(prune, intervalMs);
  timer.unref();
  return {
    /** Prunes now (tests; the schedule goes on). */
    now: () => prune(),
    stop: () => clearInterval(timer),
  };
}
