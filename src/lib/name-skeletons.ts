import type { Db } from "./db.ts";
import type { Logger } from "./logger.ts";
import { nameSkeleton } from "./names.ts";

// Migration 20261125000000_name_skeletons adds the `name_skeleton` columns empty: the skeleton
// needs Unicode's confusables table, which SQL does not have. Each start fills in the rows still
// without one (all of them once, after the migration; afterwards only rows an older version wrote
// during a rolling upgrade, and the look-alikes below), before the instance serves.
//
// Oldest first, a row gets its skeleton unless an older row already holds it (users: any; channels:
// a public one, where the partial unique index applies). Such a row keeps NULL: it goes on working
// under its name, and the older row's skeleton keeps new look-alikes of both out. It is looked at
// again at each start, which costs one comparison per such row.
//
// Should the confusables table change (a new version of `unhomoglyph`), a migration that sets every
// name_skeleton back to NULL makes the next start compute them all again.

const BATCH = 500;

type Row = { id: number; name: string; public: boolean };
type Tx = Parameters<Parameters<Db["$transaction"]>[0]>[0];

interface Table {
  /** Blocks writes to the table until the transaction ends (concurrent backfills wait for each other). */
  lock(tx: Tx): Promise<unknown>;
  /** The next rows without a skeleton, by id. */
  pending(tx: Tx | Db, after: number): Promise<Row[]>;
  /** Sets each skeleton unless a row holding it (where it must be unique) exists; returns how many were set. */
  fill(tx: Tx, ids: number[], skeletons: string[]): Promise<number>;
}

const tables: Record<"users" | "channels", Table> = {
  users: {
    lock: (tx) => tx.$executeRaw`LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE`,
    pending: (tx, after) => tx.$queryRaw<Row[]>`
      SELECT id, username AS name, true AS public FROM users
      WHERE name_skeleton IS NULL AND id > ${after} ORDER BY id LIMIT ${BATCH}`,
    fill: (tx, ids, skeletons) => tx.$executeRaw`
      UPDATE users u SET name_skeleton = v.s FROM unnest(${ids}::int[], ${skeletons}::text[]) AS v(id, s)
      WHERE u.id = v.id AND NOT EXISTS (SELECT 1 FROM users x WHERE x.name_skeleton = v.s)`,
  },
  channels: {
    lock: (tx) => tx.$executeRaw`LOCK TABLE channels IN SHARE ROW EXCLUSIVE MODE`,
    // Direct channels have generated names ("direct") and no skeleton.
    pending: (tx, after) => tx.$queryRaw<Row[]>`
      SELECT id, name, kind = 'public' AS public FROM channels
      WHERE name_skeleton IS NULL AND kind <> 'direct' AND id > ${after} ORDER BY id LIMIT ${BATCH}`,
    fill: (tx, ids, skeletons) => tx.$executeRaw`
      UPDATE channels c SET name_skeleton = v.s FROM unnest(${ids}::int[], ${skeletons}::text[]) AS v(id, s)
      WHERE c.id = v.id AND (c.kind <> 'public' OR NOT EXISTS (SELECT 1 FROM channels x WHERE x.kind = 'public' AND x.name_skeleton = v.s))`,
  },
};

async function backfill(db: Db, table: Table): Promise<{ filled: number; lookalikes: number }> {
  let after = 0;
  let filled = 0;
  let lookalikes = 0;
  // Usually nothing to do: looked at without the lock first.
  if ((await table.pending(db, after)).length === 0) return { filled, lookalikes };
  for (;;) {
    // Under the lock, no registration or channel creation on a running instance can take a
    // skeleton between the read and the update (that would be a unique violation); each batch
    // holds it for milliseconds.
    const batch = await db.$transaction(async (tx) => {
      await table.lock(tx);
      const rows = await table.pending(tx, after);
      // Within the batch, the oldest public row of each skeleton is the one that may hold it.
      const taken = new Set<string>();
      const ids: number[] = [];
      const skeletons: string[] = [];
      for (const row of rows) {
        const skeleton = nameSkeleton(row.name);
        if (row.public && taken.has(skeleton)) continue;
        if (row.public) taken.add(skeleton);
        ids.push(row.id);
        skeletons.push(skeleton);
      }
      const set = ids.length > 0 ? await table.fill(tx, ids, skeletons) : 0;
      return { rows: rows.length, last: rows.at(-1)?.id ?? after, set };
    });
    if (batch.rows === 0) break;
    after = batch.last;
    filled += batch.set;
    lookalikes += batch.rows - batch.set;
  }
  return { filled, lookalikes };
}

/** Fills in missing name skeletons (see above); logs what it did when it did anything. */
export async function backfillNameSkeletons(db: Db, logger: Pick<Logger, "info">): Promise<void> {
  const result = { users: await backfill(db, tables.users), channels: await backfill(db, tables.channels) };
  if (result.users.filled + result.users.lookalikes + result.channels.filled + result.channels.lookalikes > 0) {
    // `lookalikes`: rows left without a skeleton because an older row holds it; they keep working.
    logger.info(result, "name skeletons filled in");
  }
}
