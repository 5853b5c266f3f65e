import type { Db } from "../lib/db.ts";
import { EVENT_CREATED, EVENT_EDITED } from "./log-writes.ts";
import type { ChannelEvent, EventsPage } from "./messages.schemas.ts";

/**
 * Reading the channel event log (api.md §11): for `GET /api/channels/:id/events`, for a socket's
 * resume, and for an instance filling a gap in what it delivers. An event row names its message;
 * its payload is rendered from the message as it is now, in exactly the shape the live event had:
 * a message edited since shows its newest text (and `editedAt`) in every event, one deleted since
 * shows no text at all. Replaying ends in the state live clients are in, and erased text is not
 * kept anywhere (api.md §8).
 */

/** An event as it travels inside the service: the channel beside it, for the sequencer. */
export type LoggedEvent = ChannelEvent & { channelId: number };

type EventRow = {
  seq: number;
  type: number;
  id: number;
  user_id: number;
  username: string;
  content: string;
  created_at: Date;
  edited_at: Date | null;
};

function render(channelId: number, row: EventRow): LoggedEvent {
  const { seq, id } = row;
  if (row.type === EVENT_CREATED) {
    const data = { id, channelId, userId: row.user_id, username: row.username, content: row.content, timestamp: row.created_at.toISOString(), seq };
    return { channelId, seq, type: "message", data: row.edited_at ? { ...data, editedAt: row.edited_at.toISOString() } : data };
  }
  if (row.type === EVENT_EDITED) {
    const editedAt = (row.edited_at ?? row.created_at).toISOString();
    return { channelId, seq, type: "message:updated", data: { id, channelId, content: row.content, editedAt, seq } };
  }
  return { channelId, seq, type: "message:deleted", data: { id, channelId, seq } };
}

/** The channel's events with `after < seq <= upTo`, oldest first, at most `limit`. */
export async function readEvents(db: Db, channelId: number, after: number, upTo: number, limit: number): Promise<LoggedEvent[]> {
  if (upTo <= after) return [];
  const rows = await db.$queryRaw<EventRow[]>`
    SELECT e.seq, e.type::int AS type, m.id, m.user_id, u.username, m.content, m.created_at, m.edited_at
      FROM channel_events e JOIN messages m ON m.id = e.message_id JOIN users u ON u.id = m.user_id
     WHERE e.channel_id = ${channelId}::int AND e.seq > ${after}::int AND e.seq <= ${upTo}::int
     ORDER BY e.seq LIMIT ${limit}::int`;
  return rows.map((row) => render(channelId, row));
}

/** The channel's head and the oldest seq still kept (undefined when none is), or undefined when there is no such channel. */
export async function logBounds(db: Db, channelId: number): Promise<{ head: number; oldest: number | undefined } | undefined> {
  const [row] = await db.$queryRaw<{ head: number; oldest: number | null }[]>`
    SELECT c.seq AS head, (SELECT min(e.seq) FROM channel_events e WHERE e.channel_id = c.id) AS oldest FROM channels c WHERE c.id = ${channelId}::int`;
  return row && { head: row.head, oldest: row.oldest ?? undefined };
}

/** True when some event after `after` is no longer kept (or `after` is past the head: a cursor from elsewhere). */
export function isLimited({ head, oldest }: { head: number; oldest: number | undefined }, after: number): boolean {
  if (after > head) return true;
  if (after === head) return false;
  return oldest === undefined || oldest > after + 1;
}

/** One page of `GET /api/channels/:id/events` (membership is the caller's to check). */
export async function eventsPage(db: Db, channelId: number, after: number, limit: number): Promise<EventsPage> {
  const bounds = (await logBounds(db, channelId)) ?? { head: 0, oldest: undefined };
  if (isLimited(bounds, after)) return { events: [], head: bounds.head, limited: true };
  const events = await readEvents(db, channelId, after, bounds.head, limit);
  return { events: events.map(({ seq, type, data }) => ({ seq, type, data }) as ChannelEvent), head: bounds.head, limited: false };
}

/** Every channel's head, for an instance starting to deliver (channels with no event left out). */
export async function loadHeads(db: Db): Promise<Map<number, number>> {
  const rows = await db.$queryRaw<{ id: number; seq: number }[]>`SELECT id, seq FROM channels WHERE seq > 0`;
  return new Map(rows.map((r) => [r.id, r.seq]));
}

/** Deletes events older than the retention, a slice at a time (no long lock, no huge transaction). Returns how many went. */
export async function pruneEvents(db: Db, retentionHours: number, slice = 10_000): Promise<number> {
  const seconds = retentionHours * 3600;
  let total = 0;
  for (;;) {
    const count = await db.$executeRaw`
      DELETE FROM channel_events WHERE ctid IN (
        SELECT ctid FROM channel_events WHERE created_at < now() - make_interval(secs => ${seconds}::float8) LIMIT ${slice}::int)`;
    total += count;
    if (count < slice) return total;
  }
}
