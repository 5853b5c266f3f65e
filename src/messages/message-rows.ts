import type { ChatMessage, DeletedMessage, HistoryEntry } from "./messages.schemas.ts";

/** Prisma's `include` for a message with its author's name. */
export const withAuthor = { user: { select: { username: true } } } as const;

export type MessageRow = {
  id: number;
  channelId: number;
  userId: number;
  content: string;
  createdAt: Date;
  editedAt: Date | null;
  deletedAt: Date | null;
  user: { username: string };
};

export function toChatMessage(row: Omit<MessageRow, "deletedAt">): ChatMessage {
  const message: ChatMessage = {
    id: row.id,
    channelId: row.channelId,
    userId: row.userId,
    username: row.user.username,
    content: row.content,
    timestamp: row.createdAt.toISOString(),
  };
  if (row.editedAt) message.editedAt = row.editedAt.toISOString();
  return message;
}

/** A deleted message keeps its id (and place in history) but nothing of what it said. */
export function toHistoryEntry(row: MessageRow): HistoryEntry {
  return row.deletedAt ? tombstone(row.id) : toChatMessage(row);
}

const tombstone = (id: number): DeletedMessage => ({ id, deleted: true });
