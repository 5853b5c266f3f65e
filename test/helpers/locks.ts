import type { SQL } from "bun";
import { scrapeMetrics } from "./env.ts";

// For tests that hold the message writer at a chosen point: locks held from a connection of the
// test's own, who waits on them, the writer's batch metric, and polling until something is so
// (`until`, from wait.ts, re-exported for the files that take it from here).

export { until } from "./wait.ts";

/** What the backends of `sql`'s database that wait for a lock are running. */
export async function waitingForLocks(sql: SQL): Promise<string[]> {
  const rows = await sql<{ query: string }[]>`
    SELECT query FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`;
  return rows.map((r) => r.query);
}

/**
 * Runs `statement` (one that takes a lock) in a transaction of its own, held until `release()`;
 * `taken` resolves once the statement has returned (the lock is held).
 */
export function lockLater(sql: SQL, statement: string): { taken: Promise<void>; release(): Promise<void> } {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let taken!: () => void;
  const isTaken = new Promise<void>((resolve) => (taken = resolve));
  const done = sql.begin(async (tx) => {
    await tx.unsafe(statement);
    taken();
    await released;
  });
  return {
    taken: Promise.race([isTaken, done]),
    async release() {
      release();
      await done;
    },
  };
}

/** `lockLater`, once the lock is held. */
export async function hold(sql: SQL, statement: string): Promise<{ release(): Promise<void> }> {
  const lock = lockLater(sql, statement);
  await lock.taken;
  return lock;
}

type Outcome = "committed" | "split" | "failed";
export type BatchFigures = Record<Outcome, { batches: number; rows: number }>;

/** The writer's batch histogram from the server's /metrics: per outcome, how many transactions and how many rows. */
export async function batchFigures(baseUrl: string): Promise<BatchFigures> {
  const text = await scrapeMetrics(baseUrl);
  const sample = (suffix: "count" | "sum", outcome: Outcome) => Number(new RegExp(`^chat_message_batch_rows_${suffix}\\{outcome="${outcome}"\\} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  const figures = (outcome: Outcome) => ({ batches: sample("count", outcome), rows: sample("sum", outcome) });
  return { committed: figures("committed"), split: figures("split"), failed: figures("failed") };
}

/** The batches since `before` was read. */
export async function batchesSince(baseUrl: string, before: BatchFigures): Promise<BatchFigures> {
  const after = await batchFigures(baseUrl);
  const delta = (o: Outcome) => ({ batches: after[o].batches - before[o].batches, rows: after[o].rows - before[o].rows });
  return { committed: delta("committed"), split: delta("split"), failed: delta("failed") };
}
