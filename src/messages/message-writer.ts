import type { Pool } from "pg";
import type { Db } from "../lib/db.ts";
import { isDatabaseUnavailable } from "../lib/db.ts";
import { insertBatch } from "./batch-insert.ts";
import type { ChatMessage, HistoryEntry } from "./messages.schemas.ts";
import { storeOne } from "./store-one.ts";

/** A message to store, its author's name included (usernames never change, so the token's is the stored one). */
export interface NewMessage {
  channelId: number;
  userId: number;
  username: string;
  content: string;
  clientId: string | null;
}

/** What a writer answers once the message is committed. */
export type Written =
  | {
      created: true;
      message: ChatMessage;
      /** Publish only after this message of the channel is published (publish-gate.ts); absent when nothing need be awaited. */
      previousId?: number;
      /** The channel's last message of its transaction: the one whose publication is recorded for other instances. */
      lastOfBatch: boolean;
    }
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
 * transaction. A batch closes at `maxRows`, or `windowMs` after its first message arrived.
 * Up to `maxInFlight` batches commit at once (a commit waits mostly for the disk, not the
 * CPU), but never two holding the same channel: a channel's messages are committed, and
 * its writes resolved, in the order they were made. Each `write` resolves only after its
 * row's COMMIT returned.
 */
export function createMessageWriter(deps: {
  db: Db;
  pool: Pool;
  /** Look up each channel's previous message id (only the cross-instance publish gate needs it). */
  withPreviousIds: boolean;
  maxRows?: number;
  windowMs?: number;
  maxInFlight?: number;
  /** Seconds each stored message waited, from `write` to its commit. */
  onPersisted?: (seconds: number) => void;
  onBatch?: (rows: number, outcome: BatchOutcome) => void;
}) {
  const { db, pool, withPreviousIds, maxRows = 256, windowMs = 1, maxInFlight = MAX_BATCHES_IN_FLIGHT, onPersisted, onBatch } = deps;
  type Queued = { row: NewMessage; queuedAt: number; resolve: (written: Written) => void; reject: (error: unknown) => void };
  let queue: Queued[] = [];
  /** Channels of the batches being committed: their next rows wait for the next batch. */
  const busy = new Set<number>();
  let inFlight = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  /** The rows the next batch may take: in order, none of a busy channel, at most `maxRows`. */
  function eligible(): Queued[] {
    const rows: Queued[] = [];
    for (const queued of queue) {
      if (busy.has(queued.row.channelId)) continue;
      rows.push(queued);
      if (rows.length === maxRows) break;
    }
    return rows;
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
      const channels = new Set(batch.map((queued) => queued.row.channelId));
      for (const channelId of channels) busy.add(channelId);
      inFlight++;
      void commit(batch).finally(() => {
        for (const channelId of channels) busy.delete(channelId);
        inFlight--;
        schedule();
      });
    }
  }

  const persisted = (queued: Queued) => onPersisted?.((performance.now() - queued.queuedAt) / 1000);

  /** Settles every row of the batch, in order; never throws. */
  async function commit(batch: Queued[]): Promise<void> {
    let written: Written[];
    try {
      written = await insertBatch(
        pool,
        batch.map((q) => q.row),
        { withPreviousIds },
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
      queued.resolve(written[i]!);
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
        const written = await storeOne(db, queued.row);
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
      return new Promise((resolve, reject) => {
        queue.push({ row, queuedAt: performance.now(), resolve, reject });
        schedule();
      });
    },
  };
}
