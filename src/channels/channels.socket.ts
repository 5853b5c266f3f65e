import { validationError } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import { tryConsume, type Limiter } from "../lib/rate-limit.ts";
import { typingInputSchema } from "../messages/messages.schemas.ts";
import { channelRefusals } from "./channel-refusals.ts";
import { channelRoom, userRoom, type ChatServer, type ChatSocket } from "../realtime/rooms.ts";
import { clientEvent } from "../realtime/socket-events.ts";
import type { Authenticator } from "../sessions/authenticator.ts";
import type { ChannelsService } from "./channels.service.ts";

/** The socket `typing` event: relayed to the channel's other members, throttled per user and channel. */
export function typingHandlers(deps: { channels: ChannelsService; authenticator: Authenticator; typingLimiter?: Limiter; logger: Logger }) {
  const { channels, authenticator, typingLimiter, logger } = deps;
  const refusals = channelRefusals();
  const onTyping = clientEvent("typing", logger, async (socket: ChatSocket, payload) => {
    const userId = socket.data.user.id;
    const parsed = typingInputSchema.safeParse(payload);
    if (!parsed.success) throw validationError(parsed.error.issues, "Typing event failed validation");
    const { channelId } = parsed.data;
    // From memory: one query per session on a cache miss, shared by the events waiting for it.
    await authenticator.current(socket.data.user);
    // The socket's rooms follow membership; only when it is not in the room does the
    // database say why (NOT_FOUND or FORBIDDEN, as over REST), once for a while.
    if (!socket.rooms.has(channelRoom(channelId))) await refusals(socket, channelId, () => channels.assertMember(userId, channelId));
    // Throttled per user and channel: within the window, further typing events are dropped quietly.
    if (await tryConsume(typingLimiter, `${userId}:${channelId}`)) socket.to(channelRoom(channelId)).except(userRoom(userId)).emit("typing", { channelId, userId });
    return {};
  });
  return (socket: ChatSocket) => void socket.on("typing", onTyping);
}

/** Tells every socket of a user that their read marker moved, so unread counts agree everywhere. */
export function readMarkerNotifier(io: ChatServer) {
  return (userId: number, channelId: number, lastReadId: number) => {
    io.to(userRoom(userId)).emit("channel:read", { channelId, lastReadId });
  };
}
