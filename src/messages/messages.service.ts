import { Prisma } from "../generated/prisma/client.ts";
import type { Db } from "../lib/db.ts";
import { isUniqueViolation } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { consumeOrThrow, type Limiter } from "../lib/rate-limit.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { ChannelsService } from "../channels/channels.service.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";
import type { ChatMessage, HistoryQuery, MessageInput } from "./messages.schemas.ts";

/** Delivers a committed message to the sockets of its channel's members. */
export type Publish = (message: ChatMessage) => void;

export type MessagesService = ReturnType<typeof createMessagesService>;

const withAuthor = { user: { select: { username: true } } } as const;

function toChatMessage(row: { id: number; channelId: number; userId: number; content: string; createdAt: Date; user: { username: string } }): ChatMessage {
  return {
    id: row.id,
    channelId: row.channelId,
    userId: row.userId,
    username: row.user.username,
    content: row.content,
    timestamp: row.createdAt.toISOString(),
  };
}

export function createMessagesService(deps: { db: Db; channels: ChannelsService; publish: Publish; limiter?: Limiter }) {
  const { db, channels, publish, limiter } = deps;
  // Writes not yet acknowledged; graceful shutdown waits for them.
  const inFlight = new Set<Promise<unknown>>();
  // Per channel, the last write in line. Each write waits for the one before it to be
  // committed and published, so this instance publishes a channel's messages in id order.
  const tails = new Map<number, Promise<void>>();

  function inChannelOrder<T>(channelId: number, task: () => Promise<T>): Promise<T> {
    const result = (tails.get(channelId) ?? Promise.resolve()).then(task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    tails.set(channelId, tail);
    void tail.then(() => {
      if (tails.get(channelId) === tail) tails.delete(channelId);
    });
    return result;
  }
  let closed = false;

  async function store(author: AuthUser, channelId: number, input: MessageInput): Promise<{ message: ChatMessage; created: boolean }> {
    try {
      // One writer per channel at a time across instances too, so ids are assigned in commit
      // order (api.md §8); `inChannelOrder` then publishes them in that order.
      // A batch, not an interactive transaction: under a burst, waiting for the lock must not
      // run into Prisma's interactive-transaction start and run timeouts.
      const [, row] = await db.$transaction([
        db.$executeRaw`SELECT pg_advisory_xact_lock(${channelId}::int)`,
        db.message.create({
          data: { channelId, userId: author.id, content: input.content, clientId: input.clientId ?? null },
          include: withAuthor,
        }),
      ]);
      return { message: toChatMessage(row), created: true };
    } catch (error) {
      // A resend of a clientId we already stored: the unique constraint caught it; answer with the original.
      if (input.clientId !== undefined && isUniqueViolation(error, "client_id")) {
        const first = await db.message.findUniqueOrThrow({
          where: { userId_clientId: { userId: author.id, clientId: input.clientId } },
          include: withAuthor,
        });
        return { message: toChatMessage(first), created: false };
      }
      if (error instanceof Prisma.PrismaClientKnownRequestError && error.code === "P2003") {
        throw new AppError("UNAUTHORIZED", "The account for this token no longer exists");
      }
      throw error;
    }
  }

  return {
    /**
     * Stores a message and, only once it is committed, publishes it. Returns the stored
     * message (the first one, for a repeated clientId, which is not published again).
     */
    async send(author: AuthUser, input: MessageInput): Promise<ChatMessage> {
      if (input.userId !== undefined && input.userId !== author.id) {
        throw new AppError("FORBIDDEN", "userId does not match the authenticated user");
      }
      if (closed) throw new AppError("UNAVAILABLE", "The server is shutting down; send again after reconnecting");
      // Tracked from acceptance on, so a shutdown that starts during the checks below still waits for it.
      const write = (async () => {
        // Burst and sustained limits per author, for sockets and REST alike.
        await consumeOrThrow(limiter, String(author.id), "Too many messages; slow down");
        const channelId = input.channelId ?? GENERAL_CHANNEL_ID;
        await channels.assertMember(author.id, channelId);
        return inChannelOrder(channelId, async () => {
          const { message, created } = await store(author, channelId, input);
          if (created) publish(message);
          return message;
        });
      })();
      inFlight.add(write);
      try {
        return await write;
      } finally {
        inFlight.delete(write);
      }
    },

    /**
     * api.md §4: newest first by default and with `before`, oldest first with `after`, for a
     * channel the reader belongs to.
     */
    async history(reader: AuthUser, channelId: number, { limit, before, after }: HistoryQuery): Promise<ChatMessage[]> {
      await channels.assertMember(reader.id, channelId);
      const cursor = after !== undefined ? { id: { gt: after } } : before !== undefined ? { id: { lt: before } } : {};
      const rows = await db.message.findMany({
        where: { channelId, ...cursor },
        orderBy: { id: after !== undefined ? "asc" : "desc" },
        take: limit,
        include: withAuthor,
      });
      return rows.map(toChatMessage);
    },

    /** Refuses new messages and resolves when every accepted write has finished. */
    async close(): Promise<void> {
      closed = true;
      await Promise.allSettled([...inFlight]);
    },
  };
}
