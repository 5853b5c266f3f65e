import type { Db } from "../lib/db.ts";
import { poolOf } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { hasRole } from "../lib/policy.ts";
import type { AuditService } from "../audit/audit.service.ts";
import { consumeOrThrow, type Limiter } from "../lib/rate-limit.ts";
import { keyedQueue } from "../lib/keyed-queue.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { ChannelsService } from "../channels/channels.service.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";
import type { ChatMessage, EventsPage, EventsQuery, HistoryEntry, HistoryQuery, MessageInput, SentMessage } from "./messages.schemas.ts";
import { toChatMessage, toHistoryEntry, withAuthor } from "./message-rows.ts";
import type { RecentMessages } from "./recent-messages.ts";
import { createMessageWriter, type BatchOutcome, type NewMessage } from "./message-writer.ts";
import { editMessageLogged, eraseMessageLogged } from "./log-writes.ts";
import { eventsPage } from "./channel-log.ts";
import type { Fanout } from "./fanout.ts";
import type { ModerationService, Verdict } from "../moderation/moderation.service.ts";

export type MessagesService = ReturnType<typeof createMessagesService>;

export interface SendOptions {
  /**
   * The caller already knows the author is a member of the channel (a socket is in the rooms
   * of its user's channels), so the membership query is skipped.
   */
  knownMember?: boolean;
}

export function createMessagesService(deps: {
  db: Db;
  channels: ChannelsService;
  audit: AuditService;
  /** Where committed events go: this instance's sockets and every other instance's (fanout.ts). */
  fanout: Pick<Fanout, "publish">;
  /** A message was edited or deleted (after its commit): the cached summaries covering it go (api.md §10). */
  onChanged?: (channelId: number, messageId: number) => void;
  limiter?: Limiter;
  /** Seconds each new message took from being accepted to its commit (the persist-latency metric). */
  onPersisted?: (seconds: number) => void;
  /** Rows per group-commit transaction, and how it ended (the batch metric). */
  onBatch?: (rows: number, outcome: BatchOutcome) => void;
  /** Each channel's newest messages in memory (one instance only), kept by the fan-out's events. */
  recent?: RecentMessages;
  /** api.md §10: checks messages and edits before storing (block) or after delivery (flag); none or MODERATION=off: nothing runs. */
  moderation?: ModerationService;
}) {
  const { db, channels, audit, fanout, onChanged, limiter, onPersisted, onBatch, recent } = deps;
  const moderation = deps.moderation?.active ? deps.moderation : undefined;
  const pool = poolOf(db);
  const writer = createMessageWriter({ db, pool, onPersisted, onBatch });
  // Writes not yet acknowledged; graceful shutdown waits for them.
  const inFlight = new Set<Promise<unknown>>();
  // Moderation (block mode, with a model): per channel, the last accepted message in line to be
  // handed to the writer. A message takes its place at acceptance and its model check starts at
  // once, so checks of different messages run concurrently; it is handed over (writer.write) only
  // once every earlier message of the channel was handed over or refused, so ids, commits and
  // publications follow acceptance order. Handing over does not wait for a commit: messages whose
  // checks end together still share a group-commit batch.
  const inAcceptanceOrder = keyedQueue();

  /**
   * Hands `row` to the writer; resolves with the stored message once it is committed and this
   * instance's sockets have its event (the fan-out puts every channel's events in seq order, so
   * nothing here waits for anything else). `onCreated` runs once a new message is published (not
   * for a resent clientId).
   */
  async function store(row: NewMessage, onCreated?: (message: ChatMessage) => void): Promise<SentMessage> {
    const written = await writer.write(row);
    if (!written.created) return written.message;
    const { message } = written;
    await fanout.publish({ channelId: row.channelId, seq: message.seq, type: "message", data: message });
    onCreated?.(message);
    return message;
  }

  /** MODERATION=block or flag: `store` with the checks of api.md §10 around it. */
  async function moderatedStore(mod: ModerationService, row: NewMessage): Promise<SentMessage> {
    const { channelId, userId } = row;
    if (row.clientId !== null) {
      // A resend of a stored message gets it back, as without moderation, and is not checked again:
      // a model may answer differently the second time.
      const stored = await db.message.findUnique({ where: { userId_clientId: { userId, clientId: row.clientId } }, include: withAuthor });
      if (stored) return toHistoryEntry(stored);
    }
    if (mod.mode === "flag") {
      // Delivered as usual; the word list's hit, or the model's verdict (asked at once, awaited
      // after delivery), becomes a flag in the background.
      const verdict = mod.check(row.content);
      return store(row, (message) => mod.review(userId, verdict, { channelId, messageId: message.id }));
    }
    const verdict = mod.check(row.content);
    if (!(verdict instanceof Promise)) {
      // The word list decided (or there is no model): nothing to wait for, no place in line needed.
      if (!verdict.allowed) throw await mod.refuse(userId, verdict, { channelId });
      return store(row);
    }
    const handed = await inAcceptanceOrder(channelId, async (): Promise<{ refused: Verdict } | { stored: Promise<SentMessage>; verdict: Verdict }> => {
      const settled = await verdict;
      // A refused message releases its place at once.
      if (!settled.allowed) return { refused: settled };
      const stored = store(row, (message) => mod.allowed(userId, settled, { channelId, messageId: message.id }));
      stored.catch(() => undefined);
      return { stored, verdict: settled };
    });
    if ("refused" in handed) throw await mod.refuse(userId, handed.refused, { channelId });
    return handed.stored;
  }

  let closed = false;

  /** Runs a write, refused once shutdown starts and waited for by `close()` once accepted. */
  async function accepted<T>(write: () => Promise<T>): Promise<T> {
    if (closed) throw new AppError("UNAVAILABLE", "The server is shutting down; send again after reconnecting");
    // Tracked from acceptance on, so a shutdown that starts during the checks inside still waits for it.
    const running = write();
    inFlight.add(running);
    try {
      return await running;
    } finally {
      inFlight.delete(running);
    }
  }

  /**
   * The message `actor` wants to act on. Missing messages, and messages in private or direct
   * channels the actor is not in, are NOT_FOUND alike, unless the actor may delete anywhere.
   */
  async function findForAction(actor: AuthUser, messageId: number, { anywhere }: { anywhere: boolean }) {
    const row = await db.message.findUnique({ where: { id: messageId }, include: withAuthor });
    if (!row) throw new AppError("NOT_FOUND", "No such message");
    if (!anywhere) {
      await channels.findVisible(actor.id, row.channelId).catch(() => {
        throw new AppError("NOT_FOUND", "No such message");
      });
    }
    return row;
  }

  return {
    /**
     * Stores a message and, only once it is committed, publishes it. Returns the stored
     * message (the first one, for a repeated clientId, which is not published again).
     */
    async send(author: AuthUser, input: MessageInput, { knownMember = false }: SendOptions = {}): Promise<SentMessage> {
      if (input.userId !== undefined && input.userId !== author.id) {
        throw new AppError("FORBIDDEN", "userId does not match the authenticated user");
      }
      return accepted(async () => {
        // Burst and sustained limits per author, for sockets and REST alike.
        await consumeOrThrow(limiter, String(author.id), "Too many messages; slow down");
        const channelId = input.channelId ?? GENERAL_CHANNEL_ID;
        if (!knownMember) await channels.assertMember(author.id, channelId);
        const row = { channelId, userId: author.id, username: author.username, content: input.content, clientId: input.clientId ?? null };
        return moderation ? moderatedStore(moderation, row) : store(row);
      });
    },

    /**
     * The author replaces a message's text (api.md §8). Unchanged text changes nothing and
     * broadcasts nothing. A deleted message cannot be edited back to life: NOT_FOUND.
     */
    async edit(author: AuthUser, messageId: number, content: string): Promise<ChatMessage> {
      return accepted(async () => {
        // An edit is broadcast like a message, so it spends the same budget.
        await consumeOrThrow(limiter, String(author.id), "Too many messages; slow down");
        const row = await findForAction(author, messageId, { anywhere: false });
        if (row.deletedAt) throw new AppError("NOT_FOUND", "No such message");
        if (row.userId !== author.id) throw new AppError("FORBIDDEN", "Only the author can edit a message");
        if (row.content === content) return toChatMessage(row);
        // An edit cannot bring in what a send could not: the same check (api.md §10). Block: before
        // the update; flag: the edited message is flagged after it is delivered.
        const target = { channelId: row.channelId, messageId, edit: true };
        const verdict = moderation?.check(content);
        let allowed: Verdict | undefined;
        if (moderation?.mode === "block" && verdict) {
          allowed = await verdict;
          if (!allowed.allowed) throw await moderation.refuse(author.id, allowed, target);
        }
        const edited = await editMessageLogged(pool, row.channelId, messageId, content);
        // Deleted meanwhile: the delete won the race and is not undone.
        if (!edited) throw new AppError("NOT_FOUND", "No such message");
        const message = toChatMessage({ ...row, content, editedAt: edited.editedAt });
        const { channelId } = row;
        await fanout.publish({ channelId, seq: edited.seq, type: "message:updated", data: { id: messageId, channelId, content, editedAt: message.editedAt!, seq: edited.seq } });
        onChanged?.(channelId, messageId);
        if (moderation && verdict) {
          if (allowed) moderation.allowed(author.id, allowed, target);
          else moderation.review(author.id, verdict, target);
        }
        return message;
      });
    },

    /**
     * Authors delete their own messages; moderators and admins any message, audited (§7).
     * The text is erased, not hidden: history and search keep only `{ id, deleted: true }`.
     * Deleting a deleted message again is a harmless no-op.
     */
    async remove(actor: AuthUser, messageId: number, ip: string): Promise<void> {
      return accepted(async () => {
        const moderator = hasRole(actor, "messages.deleteAny");
        const row = await findForAction(actor, messageId, { anywhere: moderator });
        const byAuthor = row.userId === actor.id;
        if (!byAuthor && !moderator) throw new AppError("FORBIDDEN", "Only the author or a moderator can delete a message");
        if (row.deletedAt) return;
        const { channelId } = row;
        const seq = await db.$transaction(async (tx) => {
          const erased = await eraseMessageLogged(tx, channelId, messageId);
          if (erased !== undefined && !byAuthor) {
            await audit.record(
              { actorId: actor.id, action: "message_delete", targetType: "message", targetId: messageId, ip, meta: { channelId, authorId: row.userId } },
              tx,
            );
          }
          return erased;
        });
        // Undefined: another delete of it won the race; it published.
        if (seq === undefined) return;
        await fanout.publish({ channelId, seq, type: "message:deleted", data: { id: messageId, channelId, seq } });
        onChanged?.(channelId, messageId);
      });
    },

    /** api.md §11: the channel's events after `after`, for a member (general: everyone). */
    async events(reader: AuthUser, channelId: number, { after, limit }: EventsQuery): Promise<EventsPage> {
      if (channelId !== GENERAL_CHANNEL_ID) await channels.assertMember(reader.id, channelId);
      return eventsPage(db, channelId, after, limit);
    },

    /**
     * api.md §4: newest first by default and with `before`, oldest first with `after`, for a
     * channel the reader belongs to.
     */
    async history(reader: AuthUser, channelId: number, { limit, before, after }: HistoryQuery): Promise<HistoryEntry[]> {
      // Everyone is in general and nobody can leave it: no question to ask the database.
      if (channelId !== GENERAL_CHANNEL_ID) await channels.assertMember(reader.id, channelId);
      const read = async (take: number) => {
        const cursor = after !== undefined ? { id: { gt: after } } : before !== undefined ? { id: { lt: before } } : {};
        const rows = await db.message.findMany({
          where: { channelId, ...cursor },
          orderBy: { id: after !== undefined ? "asc" : "desc" },
          take,
          include: withAuthor,
        });
        return rows.map(toHistoryEntry);
      };
      // The newest page, which every client reads on opening a channel, comes from memory.
      if (!recent || before !== undefined || after !== undefined) return read(limit);
      return recent.newest(channelId, limit) ?? (await recent.fill(channelId, read)).slice(0, limit);
    },

    /** Writes accepted and not yet answered: what `close()` would wait for. */
    pendingWrites(): number {
      return inFlight.size;
    },

    /** Refuses new messages and resolves when every accepted write has finished. */
    async close(): Promise<void> {
      closed = true;
      await Promise.allSettled([...inFlight]);
      await deps.moderation?.drain();
    },
  };
}

