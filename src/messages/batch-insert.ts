import type { Pool, PoolClient } from "pg";
import { isDatabaseUnavailable } from "../lib/db.ts";
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
 * Every row in one statement, the channels' locks taken first (the one-time filter runs before
 * any row is produced). Alone, it is its own transaction: one round trip stores a batch.
 * WITH ORDINALITY keeps the rows in array order and ids are drawn in that order, so sorting
 * what RETURNING gives back by id matches each row to its caller.
 */
const insertRows = {
  name: "messages.batch.insert",
  text: `WITH locked AS (SELECT pg_advisory_xact_lock(c) FROM unnest($1::int[]) AS c)
INSERT INTO messages (channel_id, user_id, content, client_id)
SELECT r.channel_id, r.user_id, r.content, r.client_id
  FROM unnest($2::int[], $3::int[], $4::text[], $5::text[]) WITH ORDINALITY AS r(channel_id, user_id, content, client_id, ord)
 WHERE (SELECT count(*) FROM locked) >= 0
 ORDER BY r.ord
RETURNING id, created_at`,
};

type InsertedRow = { id: number; created_at: Date };

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
  const columns = [rows.map((r) => r.channelId), rows.map((r) => r.userId), rows.map((r) => r.content), rows.map((r) => r.clientId)];
  const insert = (client: PoolClient) => client.query<InsertedRow>(prepared(client, insertRows, [channelIds, ...columns]));
  const client = await pool.connect();
  // Between our queries the connection may fail with no query to report it to: that error
  // event must not crash the process; the next query fails and says so.
  const ignore = () => undefined;
  client.on("error", ignore);
  let broken: Error | undefined;
  try {
    if (!withPreviousIds) {
      try {
        return toWritten(rows, (await insert(client)).rows, undefined);
      } catch (error) {
        // A connection that failed under the statement may not know it yet (its close event can come
        // after the error): discarded, not handed to the next caller, who would fail in its place.
        if (isDatabaseUnavailable(error)) broken = error as Error;
        throw error;
      }
    }
    // With the publish gate, the previous ids must be read under the same locks: one transaction.
    try {
      await client.query("BEGIN");
      await client.query(prepared(client, lockChannels, [channelIds]));
      const previous = await client.query<{ channel_id: number; id: number }>(prepared(client, previousIds, [channelIds]));
      const inserted = await insert(client);
      await client.query("COMMIT");
      return toWritten(rows, inserted.rows, new Map(previous.rows.map((p) => [p.channel_id, p.id])));
    } catch (error) {
      await client.query("ROLLBACK").catch((failure: Error) => (broken = failure));
      throw error;
    }
  } finally {
    client.removeListener("error", ignore);
    // So is one that could not even roll back.
    client.release(broken);
  }
}

/**
 * Each row's answer. Only a channel's first row of the batch waits for the message before the
 * batch (`previousId`), and only its last records its publication (`lastOfBatch`): the rows in
 * between follow their neighbours from this very batch, published by this instance in order.
 */
function toWritten(rows: NewMessage[], returned: InsertedRow[], previous: Map<number, number> | undefined): Written[] {
  // Nothing here may throw: the rows are committed, and a caller told otherwise would send again.
  const inserted = [...returned].sort((a, b) => a.id - b.id);
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
