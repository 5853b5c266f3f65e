import { Prisma } from "../generated/prisma/client.ts";
import type { Db } from "../lib/db.ts";
import { isUniqueViolation } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { toChatMessage, toHistoryEntry, withAuthor } from "./message-rows.ts";
import type { NewMessage, Written } from "./message-writer.ts";

/**
 * Stores one message in a transaction of its own: how the writer retries the rows of a batch
 * that failed, so that a row the database refuses fails alone, with its own answer.
 */
export async function storeOne(db: Db, row: NewMessage): Promise<Written> {
  try {
    // One writer per channel at a time across instances too, so ids are assigned in commit
    // order (api.md §8). The same lock key as a batch's, so the two paths exclude each other.
    // A batch, not an interactive transaction: under a burst, waiting for the lock must not
    // run into Prisma's interactive-transaction start and run timeouts.
    const [, [previous], created] = await db.$transaction([
      db.$executeRaw`SELECT pg_advisory_xact_lock(${row.channelId}::int)`,
      // Under the lock: the channel's message before this one, which must be published first (publish-gate.ts).
      db.$queryRaw<{ id: number }[]>`SELECT coalesce(max(id), 0)::int AS id FROM messages WHERE channel_id = ${row.channelId}::int`,
      db.message.create({
        data: { channelId: row.channelId, userId: row.userId, content: row.content, clientId: row.clientId },
        include: withAuthor,
      }),
    ]);
    return { created: true, message: toChatMessage(created), previousId: previous?.id ?? 0, lastOfBatch: true };
  } catch (error) {
    // A resend of a clientId we already stored: the unique constraint caught it; answer with the original.
    if (row.clientId !== null && isUniqueViolation(error, "client_id")) {
      const first = await db.message.findUniqueOrThrow({
        where: { userId_clientId: { userId: row.userId, clientId: row.clientId } },
        include: withAuthor,
      });
      return { created: false, message: toHistoryEntry(first) };
    }
    if (error instanceof Prisma.PrismaClientKnownRequestError && error.code === "P2003") {
      throw new AppError("UNAUTHORIZED", "The account for this token no longer exists");
    }
    throw error;
  }
}
