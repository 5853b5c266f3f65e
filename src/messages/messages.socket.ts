import { validationError } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Authenticator } from "../sessions/authenticator.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";
import { channelRoom, type ChatSocket } from "../realtime/rooms.ts";
import { clientEvent } from "../realtime/socket-events.ts";
import { messageInputSchema } from "./messages.schemas.ts";
import type { MessagesService } from "./messages.service.ts";

/**
 * The socket `message` event: the same path as `POST /api/messages` (validation, then the service:
 * limits → moderation → writer → fan-out), answered in the ack once its event reached this instance's sockets.
 */
export function messageHandlers(deps: { messages: MessagesService; authenticator: Authenticator; logger: Logger; metrics: Metrics }) {
  const { messages, authenticator, logger, metrics } = deps;
  const onMessage = clientEvent(
    "message",
    logger,
    async (socket: ChatSocket, payload) => {
      const parsed = messageInputSchema.safeParse(payload);
      if (!parsed.success) throw validationError(parsed.error.issues, "Message failed validation");
      const author = await authenticator.current(socket.data.user);
      // The socket's rooms follow membership, so being in the channel's room settles it without a
      // query; otherwise the database says why not (NOT_FOUND or FORBIDDEN). A room still being
      // replayed (resume) is not joined yet: the database answers then.
      const knownMember = socket.rooms.has(channelRoom(parsed.data.channelId ?? GENERAL_CHANNEL_ID));
      return { message: await messages.send(author, parsed.data, { knownMember }) };
    },
    (error) => (error ? metrics.messageRejected("socket", error.code) : metrics.messageAccepted("socket")),
  );
  return (socket: ChatSocket) => void socket.on("message", onMessage);
}
