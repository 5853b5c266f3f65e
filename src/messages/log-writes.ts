import type { Pool, PoolClient } from "pg";
import { isDatabaseUnavailable, type Db } from "../lib/db.ts";
import { toChatMessage } from "./message-rows.ts";
import type { LiveMessage } from "./messages.schemas.ts";

/**
 * The statements that change a channel's timeline, each writing its events to the channel's log
 * (api.md §11) in the same statement: the change, the head bump (`channels.seq`) and the event
 * rows commit together or not at all, so the log has no gap and no event of a change that did not
 * happen. Every one first takes the channel's advisory lock (the same key everywhere, api.md §8),
 * so ids and seqs are given in commit order, one writer per channel at a time, across instances too.
 *
 * Named prepared statements over node-postgres: parsed and planned once per connection. Their text
 * does not depend on the batch's size, since every row travels in one array parameter per column.
 */

/** Event types as stored (`channel_events.type`). */
export const EVENT_CREATED = 0;
export const EVENT_EDITED = 1;
export const EVENT_DELETED = 2;

/** A message to store, its author's name included (usernames never change, so the token's is the stored one). */
export interface NewMessage {
  channelId: number;
  userId: number;
  username: string;
  content: string;
  clientId: string | null;
}

/**
 * Every row in one statement. The locks come first, in ascending channel order (the caller sorts;
 * a function scan over unnest runs in array order), so two batches sharing channels can never
 * deadlock: `heads` waits for them (the one-time filter runs before any row is produced), and the
 * messages are inserted only from `heads`' rows, so after it. Each channel's head moves by its
 * number of rows; its rows get head+1, head+2... in array order. WITH ORDINALITY keeps the rows in
 * array order and ids are drawn in that order, so sorting what comes back by id matches each row
 * to its caller (and its seq: within a channel, seqs follow ids). A row of a channel that does not
 * exist has no head (LEFT JOIN): its insert fails the foreign key, and with it the whole statement.
 */
const insertRows = {
  name: "log.insert-messages",
  text: `WITH locked AS (SELECT pg_advisory_xact_lock(c) FROM unnest($1::int[]) AS c),
r AS (
  SELECT *, row_number() OVER (PARTITION BY channel_id ORDER BY ord)::int AS n
    FROM unnest($2::int[], $3::int[], $4::text[], $5::text[]) WITH ORDINALITY AS r(channel_id, user_id, content, client_id, ord)),
counts AS (SELECT channel_id, count(*)::int AS k FROM r GROUP BY channel_id),
heads AS (
  UPDATE channels ch SET seq = ch.seq + counts.k FROM counts
   WHERE ch.id = counts.channel_id AND (SELECT count(*) FROM locked) >= 0
  RETURNING ch.id AS channel_id, ch.seq - counts.k AS base),
inserted AS (
  INSERT INTO messages (channel_id, user_id, content, client_id)
  SELECT r.channel_id, r.user_id, r.content, r.client_id FROM r LEFT JOIN heads h USING (channel_id) ORDER BY r.ord
  RETURNING id, channel_id, created_at),
numbered AS (
  SELECT i.id, i.channel_id, i.created_at, h.base + row_number() OVER (PARTITION BY i.channel_id ORDER BY i.id)::int AS seq
    FROM inserted i JOIN heads h USING (channel_id)),
logged AS (INSERT INTO channel_events (channel_id, seq, type, message_id) SELECT channel_id, seq, ${EVENT_CREATED}, id FROM numbered)
SELECT id, seq, created_at FROM numbered`,
};

/**
 * An edit: the new text, the head bump and its event, under the channel's lock. `deleted_at IS NULL`
 * in the same statement: a delete that won the race is not undone (no row: NOT_FOUND). Unchanged
 * text is caught by the caller before; a race to the same text still logs an event (harmless).
 */
const editMessage = {
  name: "log.edit-message",
  text: `WITH locked AS (SELECT pg_advisory_xact_lock($1::int)),
edited AS (
  UPDATE messages SET content = $3, edited_at = now()
   WHERE id = $2 AND channel_id = $1 AND deleted_at IS NULL AND (SELECT count(*) FROM locked) >= 0
  RETURNING id, edited_at),
head AS (UPDATE channels SET seq = seq + 1 WHERE id = $1 AND EXISTS (SELECT 1 FROM edited) RETURNING seq),
logged AS (INSERT INTO channel_events (channel_id, seq, type, message_id) SELECT $1, seq, ${EVENT_EDITED}, $2 FROM head)
SELECT edited.edited_at, head.seq FROM edited, head`,
};

/** A deletion: the text erased, the head bump and its event, under the channel's lock; no row if it was already deleted. */
const eraseMessage = {
  name: "log.erase-message",
  text: `WITH locked AS (SELECT pg_advisory_xact_lock($1::int)),
erased AS (
  UPDATE messages SET content = '', deleted_at = now()
   WHERE id = $2 AND channel_id = $1 AND deleted_at IS NULL AND (SELECT count(*) FROM locked) >= 0
  RETURNING id),
head AS (UPDATE channels SET seq = seq + 1 WHERE id = $1 AND EXISTS (SELECT 1 FROM erased) RETURNING seq),
logged AS (INSERT INTO channel_events (channel_id, seq, type, message_id) SELECT $1, seq, ${EVENT_DELETED}, $2 FROM head)
SELECT head.seq FROM head`,
};

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
 * Runs `work` on one pooled connection. A connection that failed under a statement may not know
 * it yet (its close event can come after the error): it is discarded, not handed to the next
 * caller, who would fail in its place.
 */
export async function onConnection<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // Between our queries the connection may fail with no query to report it to: that error
  // event must not crash the process; the next query fails and says so.
  const ignore = () => undefined;
  client.on("error", ignore);
  let broken: Error | undefined;
  try {
    return await work(client);
  } catch (error) {
    if (isDatabaseUnavailable(error)) broken = error as Error;
    throw error;
  } finally {
    client.removeListener("error", ignore);
    client.release(broken);
  }
}

type InsertedRow = { id: number; seq: number; created_at: Date };

/**
 * Stores `rows` in one statement (its own transaction) and returns, in the same order, each as it is
 * broadcast once committed. All or nothing: throws if any row is refused.
 */
export async function insertMessages(pool: Pool, rows: NewMessage[]): Promise<LiveMessage[]> {
  const channelIds = [...new Set(rows.map((r) => r.channelId))].sort((a, b) => a - b);
  const columns = [rows.map((r) => r.channelId), rows.map((r) => r.userId), rows.map((r) => r.content), rows.map((r) => r.clientId)];
  const result = await onConnection(pool, (client) => client.query<InsertedRow>(prepared(client, insertRows, [channelIds, ...columns])));
  // Nothing below may throw: the rows are committed, and a caller told otherwise would send again.
  const inserted = [...result.rows].sort((a, b) => a.id - b.id);
  return rows.map((row, i) => {
    const { id, seq, created_at } = inserted[i]!;
    const message = toChatMessage({ id, channelId: row.channelId, userId: row.userId, content: row.content, createdAt: created_at, editedAt: null, user: { username: row.username } });
    return { ...message, seq };
  });
}

/** The edit's time and event number, or undefined when the message is gone (deleted meanwhile). */
export async function editMessageLogged(pool: Pool, channelId: number, messageId: number, content: string): Promise<{ editedAt: Date; seq: number } | undefined> {
  const result = await onConnection(pool, (client) => client.query<{ edited_at: Date; seq: number }>(prepared(client, editMessage, [channelId, messageId, content])));
  const row = result.rows[0];
  return row && { editedAt: row.edited_at, seq: row.seq };
}

/**
 * The deletion's event number, or undefined when it was already deleted. Runs in the caller's
 * transaction (a Prisma one: a moderator's delete writes its audit row in the same commit).
 */
export async function eraseMessageLogged(tx: Pick<Db, "$queryRawUnsafe">, channelId: number, messageId: number): Promise<number | undefined> {
  const rows = await tx.$queryRawUnsafe<{ seq: number }[]>(eraseMessage.text, channelId, messageId);
  return rows[0]?.seq;
}
