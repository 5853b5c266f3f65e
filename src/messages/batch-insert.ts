import type { Pool, PoolClient } from "pg";
import { toChatMessage } from "./message-rows.ts";
import type { NewMessage, Written } from "./message-writer.ts";

// Named prepared statements: parsed and planned once per connection. Their text does not depend
// on the batch's size, since every row travels in one array parameter per column.

/**
 * One writer per channel at a time, across instances too (api.md §8): the same lock key as
 * the single-row path's. Taken in ascending channel order (the caller sorts; a function scan
 * over unnest runs in array order), so two batches sharing channels can never deadlock.
 */
const lockChannels = {
  name: "messages.batch.lock-channels",
  text: "SELECT pg_advisory_xact_lock(c) FROM unnest($1::int[]) AS c",
};

/**
 * Under the locks: each channel's newest message before this batch, which must be published
 * first (publish-gate.ts). A subquery per channel, not max(id) ... GROUP BY, so each is one
 * step down the (channel_id, id) index however long the channel's history.
 */
const previousIds = {
  name: "messages.batch.previous-ids",
  text: "SELECT c AS channel_id, coalesce((SELECT max(id) FROM messages WHERE channel_id = c), 0)::int AS id FROM unnest($1::int[]) AS c",
};

/**
 * Every row in one statement. PostgreSQL inserts the rows of INSERT ... SELECT FROM unnest(...)
 * in array order and RETURNING gives them back in that order, ids drawn in that order too
 * (Django's and Rails' bulk inserts rely on the same); `matchesInput` checks it anyway before
 * the commit, since the answers are matched to the callers by position.
 */
const insertRows = {
  name: "messages.batch.insert",
  text: `INSERT INTO messages (channel_id, user_id, content, client_id)
SELECT * FROM unnest($1::int[], $2::int[], $3::text[], $4::text[])
RETURNING id, channel_id, user_id, created_at`,
};

type InsertedRow = { id: number; channel_id: number; user_id: number; created_at: Date };

// Statement names carry a number per connection. On a server each connection is a session of
// its own anyway, but the embedded development database (PGlite's socket server) runs every
// connection in one shared session, where a second connection preparing the same name fails.
const connectionNumbers = new WeakMap<PoolClient, number>();
let connections = 0;

function prepared(client: PoolClient, statement: { name: string; text: string }, values: unknown[]) {
  let number = connectionNumbers.get(client);
  if (number === undefined) connectionNumbers.set(client, (number = ++connections));
  return { name: `${statement.name}.${number}`, text: statement.text, values };
}

/**
 * Stores `rows` in one transaction on one pooled connection and returns, in the same order,
 * what each caller gets once it is committed. All or nothing: throws if any row is refused.
 */
export async function insertBatch(pool: Pool, rows: NewMessage[], { withPreviousIds }: { withPreviousIds: boolean }): Promise<Written[]> {
  const channelIds = [...new Set(rows.map((r) => r.channelId))].sort((a, b) => a - b);
  const client = await pool.connect();
  // Between our queries the connection may fail with no query to report it to: that error
  // event must not crash the process; the next query fails and says so.
  const ignore = () => undefined;
  client.on("error", ignore);
  let broken: Error | undefined;
  try {
    await client.query("BEGIN");
    await client.query(prepared(client, lockChannels, [channelIds]));
    const previous = withPreviousIds ? await client.query<{ channel_id: number; id: number }>(prepared(client, previousIds, [channelIds])) : undefined;
    const columns = [rows.map((r) => r.channelId), rows.map((r) => r.userId), rows.map((r) => r.content), rows.map((r) => r.clientId)];
    const inserted = await client.query<InsertedRow>(prepared(client, insertRows, columns));
    if (!matchesInput(inserted.rows, rows)) throw new Error("the batch insert returned its rows out of order");
    // Before the COMMIT: nothing may fail after it, or the caller would store the rows again.
    const written = toWritten(rows, inserted.rows, previous && new Map(previous.rows.map((p) => [p.channel_id, p.id])));
    await client.query("COMMIT");
    return written;
  } catch (error) {
    await client.query("ROLLBACK").catch((failure: Error) => (broken = failure));
    throw error;
  } finally {
    client.removeListener("error", ignore);
    // A connection that could not even roll back is discarded, not handed to the next caller.
    client.release(broken);
  }
}

function matchesInput(inserted: InsertedRow[], rows: NewMessage[]): boolean {
  return inserted.length === rows.length && inserted.every((r, i) => r.channel_id === rows[i]!.channelId && r.user_id === rows[i]!.userId);
}

/**
 * Each row's answer. Only a channel's first row of the batch waits for the message before the
 * batch (`previousId`), and only its last records its publication (`lastOfBatch`): the rows in
 * between follow their neighbours from this very batch, published by this instance in order.
 */
function toWritten(rows: NewMessage[], inserted: InsertedRow[], previous: Map<number, number> | undefined): Written[] {
  const lastIndex = new Map(rows.map((r, i) => [r.channelId, i]));
  const seen = new Set<number>();
  return rows.map((row, i) => {
    const { id, created_at } = inserted[i]!;
    const first = !seen.has(row.channelId);
    seen.add(row.channelId);
    const message = toChatMessage({ id, channelId: row.channelId, userId: row.userId, content: row.content, createdAt: created_at, editedAt: null, user: { username: row.username } });
    return {
      created: true,
      message,
      previousId: first ? previous?.get(row.channelId) : undefined,
      lastOfBatch: lastIndex.get(row.channelId) === i,
    };
  });
}
