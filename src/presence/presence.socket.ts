import type { Logger } from "../lib/logger.ts";
import type { ChatServer, ChatSocket } from "../realtime/rooms.ts";
import type { Presence } from "./presence.service.ts";

/**
 * Presence counts users, not sockets: only the first socket in and the last out are news, told to
 * every socket. A socket counts once its session has been re-checked (realtime.ts), so one cut at
 * once is never announced.
 */
export function presenceAnnouncer(io: ChatServer, presence: Presence, logger: Logger) {
  const announce = async (userId: number, changed: Promise<boolean>, status: "online" | "offline") => {
    try {
      if (await changed) io.emit("presence", { userId, status });
    } catch (error) {
      logger.warn({ err: error, userId }, "presence could not be updated");
    }
  };
  return {
    /** Counts the socket in (announcing its user online if first) and out when it disconnects. */
    async counted(socket: ChatSocket): Promise<void> {
      const userId = socket.data.user.id;
      socket.on("disconnect", () => void announce(userId, presence.disconnected(userId), "offline"));
      await announce(userId, presence.connected(userId), "online");
    },
  };
}

/**
 * Presence changes no socket here caused: the users of an instance whose heartbeat lapsed (it died
 * with its sockets open) go offline, announced by the survivor whose sweep found them; those of an
 * instance that was only stalled come back online when it resumes (presence.service.ts).
 */
export function lapsedPresence(io: ChatServer) {
  return (userIds: number[], status: "online" | "offline") => {
    for (const userId of userIds) io.emit("presence", { userId, status });
  };
}
