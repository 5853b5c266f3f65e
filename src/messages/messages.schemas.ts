import { z } from "@hono/zod-openapi";
import { atLeastUnits, atMostUnits, codePoints, cursorParam, idParam, limitParam, MAX_ID, storableText, storableTextMessage } from "../lib/schemas.ts";

/** Message text: trimmed, 1–4000 code points, storable in PostgreSQL. Sent and edited alike. */
export const messageContentSchema = z
  .string({ error: "must be a string" })
  .refine(atMostUnits(16_000), "must be at most 4000 characters")
  .transform((s) => s.trim())
  .pipe(
    z
      .string()
      .refine((s) => codePoints(s) >= 1, "must not be empty")
      .refine((s) => codePoints(s) <= 4000, "must be at most 4000 characters")
      .refine(storableText, storableTextMessage),
  )
  .openapi({ type: "string", minLength: 1, maxLength: 4000 })
  // The same bounds for the AsyncAPI document (z.toJSONSchema reads `meta`, not `openapi`).
  .meta({ minLength: 1, maxLength: 4000, description: "trimmed; 1–4000 characters after trimming" });

/** A positive int4 id inside a JSON body or socket payload. */
const bodyId = (description: string) =>
  z
    .number({ error: "must be an integer" })
    .int("must be an integer")
    .positive("must be a positive id")
    .max(MAX_ID, "is too large")
    .openapi({ description });

/**
 * A message as a client sends it, over Socket.IO or REST (api.md §3). The same schema
 * validates both, so both refuse the same things with the same details.
 */
export const messageInputSchema = z
  .object({
    content: messageContentSchema,
    userId: z
      .number({ error: "must be an integer" })
      .int("must be an integer")
      .optional()
      .openapi({ description: "if sent, must equal the token's user" }),
    channelId: bodyId("the channel to post in; general when left out").optional(),
    clientId: z
      .string({ error: "must be a string" })
      .refine(atLeastUnits(1), "must not be empty")
      .refine(atMostUnits(64), "must be at most 64 characters")
      .refine(storableText, storableTextMessage)
      .meta({ minLength: 1, maxLength: 64 })
      .optional()
      .openapi({ description: "idempotency key chosen by the client", minLength: 1, maxLength: 64 }),
  })
  .openapi("MessageInput");

export type MessageInput = z.output<typeof messageInputSchema>;

export const messageSchema = z
  .object({
    id: z.number().int(),
    channelId: z.number().int(),
    userId: z.number().int(),
    username: z.string(),
    content: z.string(),
    timestamp: z.string().openapi({ format: "date-time" }),
    editedAt: z.string().optional().openapi({ format: "date-time", description: "present once the author has edited it" }),
  })
  .openapi("Message");

export type ChatMessage = z.infer<typeof messageSchema>;

/** A channel's event number (api.md §11): 1, 2, 3... per channel, one per created, edited or deleted message. */
const seqSchema = z.number().int().positive().openapi({ description: "the event's number in its channel's log (api.md §11)" });

/** Broadcast `message`: a committed message with its event number. */
export const liveMessageSchema = messageSchema.extend({ seq: seqSchema }).openapi("LiveMessage");

export type LiveMessage = z.infer<typeof liveMessageSchema>;

/** What history shows in place of a deleted message: its id, and that it is gone (api.md §8). */
export const deletedMessageSchema = z.object({ id: z.number().int(), deleted: z.literal(true) }).openapi("DeletedMessage");

export type DeletedMessage = z.infer<typeof deletedMessageSchema>;

/** A history entry: a message, or the tombstone of a deleted one. */
export const historyEntrySchema = z.union([messageSchema, deletedMessageSchema]).openapi("HistoryEntry");

export type HistoryEntry = z.infer<typeof historyEntrySchema>;

/** A send's answer: the message stored now, with its seq as broadcast; or, for a repeated clientId, the first one as history shows it. */
export const sentMessageSchema = z.union([liveMessageSchema, historyEntrySchema]).openapi("SentMessage");

export type SentMessage = z.infer<typeof sentMessageSchema>;

export const messageEditSchema = z.object({ content: messageContentSchema }).openapi("MessageEdit");

/** Broadcast `message:updated`. */
export const messageUpdatedSchema = z
  .object({ id: z.number().int(), channelId: z.number().int(), content: z.string(), editedAt: z.string().openapi({ format: "date-time" }), seq: seqSchema })
  .openapi("MessageUpdated");

export type MessageUpdated = z.infer<typeof messageUpdatedSchema>;

/** Broadcast `message:deleted`. */
export const messageDeletedSchema = z.object({ id: z.number().int(), channelId: z.number().int(), seq: seqSchema }).openapi("MessageDeleted");

export type MessageDeleted = z.infer<typeof messageDeletedSchema>;

export const messageIdParamsSchema = z.object({
  id: idParam.openapi({ param: { name: "id", in: "path" }, type: "integer" }),
});

/** Client `typing { channelId }`. */
export const typingInputSchema = z.object({ channelId: bodyId("the channel the caller is typing in") }).openapi("TypingInput");

export const historyQuerySchema = z
  .object({
    limit: limitParam(1, 200, 50),
    before: idParam.optional().openapi({ type: "integer", description: "older than this id, newest first" }),
    after: cursorParam.optional().openapi({ type: "integer", description: "newer than this id, oldest first (0: from the start)" }),
  })
  .refine((q) => q.before === undefined || q.after === undefined, {
    message: "use either before or after, not both",
    path: ["after"],
  });

export type HistoryQuery = z.output<typeof historyQuerySchema>;

/**
 * `GET /api/messages/search`. `q` is plain user text: only its words are used, so quotes,
 * operators and punctuation mean nothing and can never make the query fail.
 */
export const searchQuerySchema = z.object({
  q: z
    .string({ error: "is required" })
    .refine(atMostUnits(1024), "must be at most 256 characters")
    .transform((s) => s.trim())
    .pipe(
      z
        .string()
        .refine((s) => codePoints(s) >= 1, "must not be empty")
        .refine((s) => codePoints(s) <= 256, "must be at most 256 characters"),
    )
    .openapi({ type: "string", minLength: 1, maxLength: 256, description: "words to find; the last one also matches as a prefix" }),
  channelId: idParam.optional().openapi({ type: "integer", description: "only this channel (the caller must be a member)" }),
  before: idParam.optional().openapi({ type: "integer", description: "only messages older than this id" }),
  limit: limitParam(1, 100, 20),
});

export type SearchQuery = z.output<typeof searchQuerySchema>;

export const searchHitSchema = z
  .object({
    message: messageSchema,
    highlight: z.string().openapi({ description: "HTML-escaped excerpt with each match wrapped in <mark>…</mark>" }),
  })
  .openapi("SearchHit");

export type SearchHit = z.infer<typeof searchHitSchema>;

/** One entry of a channel's event log: `type` is the socket event's name, `data` exactly its payload (api.md §11). */
export const channelEventSchema = z
  .discriminatedUnion("type", [
    z.object({ seq: seqSchema, type: z.literal("message"), data: liveMessageSchema }),
    z.object({ seq: seqSchema, type: z.literal("message:updated"), data: messageUpdatedSchema }),
    z.object({ seq: seqSchema, type: z.literal("message:deleted"), data: messageDeletedSchema }),
  ])
  .openapi("ChannelEvent");

export type ChannelEvent = z.infer<typeof channelEventSchema>;

/** `GET /api/channels/:id/events`. */
export const eventsQuerySchema = z.object({
  after: cursorParam.default(0).openapi({ type: "integer", minimum: 0, default: 0, description: "the last seq the client has; 0: from the beginning" }),
  limit: limitParam(1, 1000, 200),
});

export type EventsQuery = z.output<typeof eventsQuerySchema>;

export const eventsPageSchema = z
  .object({
    events: z.array(channelEventSchema).openapi({ description: "oldest first" }),
    head: z.number().int().openapi({ description: "the channel's newest seq (0: none yet)" }),
    limited: z.boolean().openapi({ description: "true (events empty): the events after `after` are no longer all kept; reload history and continue from head" }),
  })
  .openapi("ChannelEvents");

export type EventsPage = z.infer<typeof eventsPageSchema>;

/** Channels one handshake may name. */
export const MAX_SINCE_CHANNELS = 1_000;

const sinceSeq = z
  .number({ error: "must be a number" })
  .int("must be an integer")
  .min(0, "must not be negative")
  .max(MAX_ID, "is too large");

/** `auth.since`: an object of channel id → seq; its keys are ids as JSON object keys are (strings). */
export const sinceSchema = z
  .record(z.string().regex(/^[1-9]\d{0,9}$/, "must be a channel id").refine((k) => Number(k) <= MAX_ID, "is too large"), sinceSeq, {
    error: "must be an object of channel id → seq",
  })
  .refine((since) => Object.keys(since).length <= MAX_SINCE_CHANNELS, `must name at most ${MAX_SINCE_CHANNELS} channels`)
  .meta({ description: "per channel id, the last seq the client has (api.md §11)" });
