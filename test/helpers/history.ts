import type { SQL } from "bun";
import type { ChatMessage, HistoryEntry } from "../../src/messages/messages.schemas.ts";

type MessageRow = { id: number; channel_id: number; user_id: number; username: string; content: string; created_at: Date; edited_at: Date | null; deleted_at: Date | null };

/** A stored row as history shows it: the message, or `{ id, deleted: true }` once deleted. */
function asEntry(row: MessageRow): HistoryEntry {
  if (row.deleted_at !== null) return { id: row.id, deleted: true };
  const message: ChatMessage = {
    id: row.id,
    channelId: row.channel_id,
    userId: row.user_id,
    username: row.username,
    content: row.content,
    timestamp: new Date(row.created_at).toISOString(),
  };
  if (row.edited_at !== null) message.editedAt = new Date(row.edited_at).toISOString();
  return message;
}

/** What the database says a channel's newest page is: ordered by id desc, deleted rows as tombstones. */
export async function storedNewest(db: SQL, channelId: number, limit = 50): Promise<HistoryEntry[]> {
  const rows = await db<MessageRow[]>`
    SELECT m.id, m.channel_id, m.user_id, u.username, m.content, m.created_at, m.edited_at, m.deleted_at
      FROM messages m JOIN users u ON u.id = m.user_id
     WHERE m.channel_id = ${channelId}
     ORDER BY m.id DESC
     LIMIT ${limit}`;
  return rows.map(asEntry);
}
