import type { Pool } from "pg";
import type { Db } from "../lib/db.ts";
import { isDatabaseUnavailable } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { createBatcher } from "./batcher.ts";
import { insertMessages, type NewMessage } from "./log-writes.ts";
import { toHistoryEntry, withAuthor } from "./message-rows.ts";
import type { HistoryEntry, LiveMessage } from "./messages.schemas.ts";

export type { NewMessage } from "./log-writes.ts";

/** What a writer answers once the message is committed. */
export type Written =
  /** Stored now, with its event number: to be broadcast. */
  | { created: true; message: LiveMessage }
  /** A resend of a clientId already stored: the first message, which is not published again. */
  | { created: false; message: HistoryEntry };

/** How a batch ended: committed whole, retried row by row (a row was refused), or failed (no database). */
export type BatchOutcome = "committed" | "split" | "failed";

export type MessageWriter = ReturnType<typeof createMessageWriter>;

/**
 * Batches committing at once, by default. A commit waits mostly for the disk, so a second one
 * overlaps it; more only added tail latency on two cores (bench/RESULTS.md, ingest).
 */
export const MAX_BATCHES_IN_FLIGHT = 2;

/**
 * Group commit: messages arriving together are stored by one multi-row INSERT in one
 * statement (log-writes.ts), scheduled by batcher.ts: a batch closes at `maxRows`, or `windowMs`
 * after its first message arrived; up to `maxInFlight` batches commit at once (a commit waits
 * mostly for the disk, not the CPU), but never two holding the same channel, so a channel's
 * messages are committed, and its writes resolved, in the order they were made. Each `write`
 * resolves only after its row's COMMIT returned.
 */
export function createMessageWriter(deps: {
  db: Db;
  pool: Pool;
  maxRows?: number;
  windowMs?: number;
  maxInFlight?: number;
  /** Seconds each stored message waited, from `write` to its commit. */
  onPersisted?: (seconds: number) => void;
  onBatch?: (rows: number, outcome: BatchOutcome) => void;
}) {
  const { db, pool, maxRows = 256, windowMs = 1, maxInFlight = MAX_BATCHES_IN_FLIGHT, onPersisted, onBatch } = deps;
  type Queued = { row: NewMessage; queuedAt: number; resolve: (written: Written) => void; reject: (error: unknown) => void };
  const batches = createBatcher<Queued>({ keyOf: (queued) => queued.row.channelId, run: commit, maxRows, windowMs, maxInFlight });

  const persisted = (queued: Queued) => onPersisted?.((performance.now() - queued.queuedAt) / 1000);

  /** Settles every row of the batch, in order; never throws. */
  async function commit(batch: Queued[]): Promise<void> {
    let written: LiveMessage[];
    try {
      written = await insertMessages(
        pool,
        batch.map((q) => q.row),
      );
    } catch (error) {
      if (isDatabaseUnavailable(error)) {
        onBatch?.(batch.length, "failed");
        for (const queued of batch) queued.reject(error);
      } else {
        onBatch?.(batch.length, "split");
        await oneByOne(batch);
      }
      return;
    }
    onBatch?.(batch.length, "committed");
    for (const [i, queued] of batch.entries()) {
      persisted(queued);
      queued.resolve({ created: true, message: written[i]! });
    }
  }

  /** A refused batch again, each row in a transaction of its own, so a bad row fails alone. */
  async function oneByOne(batch: Queued[]): Promise<void> {
    let unavailable: unknown;
    for (const queued of batch) {
      // Once the database is gone, the rest would only wait for their own connection timeouts.
      if (unavailable) {
        queued.reject(unavailable);
        continue;
      }
      try {
        const written = await storeAlone(db, pool, queued.row);
        if (written.created) persisted(queued);
        queued.resolve(written);
      } catch (error) {
        if (isDatabaseUnavailable(error)) unavailable = error;
        queued.reject(error);
      }
    }
  }

  return {
    /** Resolves once `row` is committed (or found already stored, for a repeated clientId). */
    write(row: NewMessage): Promise<Written> {
      return new Promise((resolve, reject) => batches.add({ row, queuedAt: performance.now(), resolve, reject }));
    },
  };
}

/**
 * One message in a statement of its own: how the writer retries the rows of a batch that failed,
 * so that a row the database refuses fails alone, with its own answer.
 */
async function storeAlone(db: Db, pool: Pool, row: NewMessage): Promise<Written> {
  try {
    const [message] = await insertMessages(pool, [row]);
    return { created: true, message: message! };
  } catch (error) {
    const { code, constraint } = error as { code?: string; constraint?: string };
    // A resend of a clientId we already stored: the unique constraint caught it; answer with the original.
    if (row.clientId !== null && code === "23505" && constraint?.includes("client_id")) {
      const first = await db.message.findUniqueOrThrow({ where: { userId_clientId: { userId: row.userId, clientId: row.clientId } }, include: withAuthor });
      return { created: false, message: toHistoryEntry(first) };
    }
    if (code === "23503" && constraint?.includes("user_id")) throw new AppError("UNAUTHORIZED", "The account for this token no longer exists");
    throw error;
  }
}
