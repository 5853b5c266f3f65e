import { z } from "@hono/zod-openapi";
import { errorSchema } from "../lib/schemas.ts";
import {
  liveMessageSchema,
  messageDeletedSchema,
  messageInputSchema,
  messageUpdatedSchema,
  sentMessageSchema,
  sinceSchema,
  typingInputSchema,
} from "../messages/messages.schemas.ts";

/**
 * The Socket.IO half of the API as data: every event, its direction, its payload's zod schema
 * and what it means. The typed contract (contract.ts) and the AsyncAPI document (/asyncapi.json)
 * are both derived from this table, so they cannot drift apart.
 */

const id = z.number().int();

/** The `error` object of §0, as acks and `<event>:error` carry it. */
export const errorBodySchema = errorSchema.shape.error;

const failedAckSchema = z.object({ ok: z.literal(false), error: errorBodySchema });

/** The handshake's `auth` (api.md §3, §11): the access token, and optionally where to resume. */
export const handshakeAuthSchema = z.object({
  token: z.string().meta({ description: "an access token (login, register or refresh)" }),
  since: sinceSchema.optional(),
});

export const clientEvents = {
  message: {
    summary: "Send a message (api.md §3, §8); the ack carries the stored message with its seq, or for a repeated clientId the first one as history shows it (a tombstone if deleted).",
    payload: messageInputSchema,
    ack: z.union([z.object({ ok: z.literal(true), message: sentMessageSchema }), failedAckSchema]),
  },
  typing: {
    summary: "The sender is typing in a channel; relayed to its other members at most once per RATE_LIMIT_TYPING window.",
    payload: typingInputSchema,
    ack: z.union([z.object({ ok: z.literal(true) }), failedAckSchema]),
  },
} as const;

export const serverEvents = {
  message: { summary: "A committed message, to the members of its channel; every channel event in seq order (api.md §11).", payload: liveMessageSchema },
  "message:updated": { summary: "A message was edited (an event of its channel's log, with its seq).", payload: messageUpdatedSchema },
  "message:deleted": { summary: "A message was deleted; its text is gone (an event of its channel's log, with its seq).", payload: messageDeletedSchema },
  resync: {
    summary:
      "A channel named in auth.since cannot be replayed (too far behind, past what the log keeps, or a seq it never had): reload its newest history page and continue from head; live events after head follow.",
    payload: z.object({ channelId: id, head: z.number().int() }),
  },
  "message:error": { summary: "A `message` without an ack callback was refused (to the sender only).", payload: errorBodySchema },
  "typing:error": { summary: "A `typing` without an ack callback was refused (to the sender only).", payload: errorBodySchema },
  typing: { summary: "Another member is typing in a channel.", payload: z.object({ channelId: id, userId: id }) },
  presence: {
    summary: "A user's first socket connected (online) or their last one closed (offline); to every socket.",
    payload: z.object({ userId: id, status: z.enum(["online", "offline"]) }),
  },
  "channel:joined": {
    summary:
      "The user became a member of a channel: they created it, joined it, were added to it, or a direct channel with them was opened (api.md §8); to every socket of theirs, after those sockets joined the channel's room, so its messages follow. Only the id is sent: reload `GET /api/channels` to learn its name, seq and unread count.",
    payload: z.object({ channelId: id }),
  },
  "channel:left": {
    summary:
      "The user is no longer a member of a channel (they left it); to every socket of theirs, after those sockets left its room: nothing more of it arrives. Reload `GET /api/channels` (or drop the channel) to agree.",
    payload: z.object({ channelId: id }),
  },
  "channel:read": {
    summary: "The caller's read marker moved (from any of their sockets or REST); to their sockets only.",
    payload: z.object({ channelId: id, lastReadId: id }),
  },
} as const;

export type ServerEventName = keyof typeof serverEvents;
export type ServerEventPayload<E extends ServerEventName> = z.infer<(typeof serverEvents)[E]["payload"]>;
export type ClientEventAck<E extends keyof typeof clientEvents> = z.infer<(typeof clientEvents)[E]["ack"]>;
