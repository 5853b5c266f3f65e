import type { Logger } from "../lib/logger.ts";
import type { ChatServer, ChatSocket } from "../realtime/rooms.ts";
import type { PresenceHandoff } from "./presence-handoff.ts";
import type { Presence } from "./presence.service.ts";

/**
 * Presence as clients see it (api.md §8): counts users, not sockets, so only a user's first socket
 * in and last one out are news, told to every socket. A socket counts once its session has been
 * re-checked (realtime.ts), so one cut at once is never announced.
 *
 * Offline waits `graceMs` (PRESENCE_GRACE_MS): a user whose last socket closed and who is back
 * within it (a network blip, a page reload, a restart of the server) was never announced offline,
 * so their return is not announced either, and `GET /api/presence` lists them meanwhile. Without it
 * every reconnect storm would announce every user to every socket, twice: ten thousand clients
 * coming back are a hundred million frames.
 *
 * A restart keeps the grace: a graceful stop hands the users online here to the next process
 * through the database (`handoff`, one instance; with Redis the instances share the counts instead,
 * see `handOff`), which takes them over (`takeOver`) as users in their grace.
 */
export interface PresenceAnnouncer {
  /** Counts the socket in (announcing its user online if first) and out when it disconnects. */
  counted(socket: ChatSocket): Promise<void>;
  /** Online user ids, ascending: those counted, and those within their grace (not announced offline). */
  online(): Promise<number[]>;
  /** Graceful stop, before the sockets are closed (server.ts). */
  handOff(): Promise<void>;
  /** At start, before serving (index.ts): the users the previous process handed over, in their grace. */
  takeOver(): Promise<void>;
  close(): void;
}

export function presenceAnnouncer(
  io: ChatServer,
  presence: Presence,
  { logger, graceMs, handoff }: { logger: Logger; graceMs: number; handoff?: PresenceHandoff },
): PresenceAnnouncer {
  /** Users whose last socket closed, not announced offline yet: when they will be. */
  const leaving = new Map<number, { until: number; timer: ReturnType<typeof setTimeout> }>();
  /** Set by `handOff`: the sockets closing now are the server's doing, not their users'. */
  let stopping = false;

  const emit = (userId: number, status: "online" | "offline") => io.emit("presence", { userId, status });
  const stay = (userId: number) => {
    clearTimeout(leaving.get(userId)?.timer);
    return leaving.delete(userId);
  };
  /** At the end of the grace: offline, unless a socket of theirs is counted again (with Redis, anywhere). */
  const settle = async (userId: number) => {
    leaving.delete(userId);
    if (!(await presence.isOnline(userId))) emit(userId, "offline");
  };
  const warned = (userId: number) => (error: unknown) => logger.warn({ err: error, userId }, "presence could not be updated");
  const leave = (userId: number, until: number) => {
    stay(userId);
    const timer = setTimeout(() => void settle(userId).catch(warned(userId)), Math.max(0, until - Date.now()));
    leaving.set(userId, { until, timer });
  };

  async function gone(userId: number): Promise<void> {
    if (!(await presence.disconnected(userId))) return;
    // Stopping with a handoff: the next process announces them, or not, when their grace ends.
    if (stopping && handoff && graceMs > 0) return;
    if (graceMs === 0 || stopping) return void emit(userId, "offline");
    leave(userId, Date.now() + graceMs);
  }

  // One listener for every socket (Socket.IO calls it with the socket as `this`), not one each.
  function disconnected(this: ChatSocket) {
    const userId = this.data.user.id;
    void gone(userId).catch(warned(userId));
  }

  return {
    async counted(socket) {
      const userId = socket.data.user.id;
      socket.on("disconnect", disconnected);
      try {
        if (!(await presence.connected(userId))) return;
        // Back within their grace: nobody was told they had gone.
        if (stay(userId)) return;
        emit(userId, "online");
      } catch (error) {
        warned(userId)(error);
      }
    },
    async online() {
      const counted = await presence.online();
      if (leaving.size === 0) return counted;
      return [...new Set([...counted, ...leaving.keys()])].sort((a, b) => a - b);
    },
    async handOff() {
      stopping = true;
      if (!handoff) {
        // With Redis no process takes over: the users still in their grace are settled now, and
        // those of the sockets closing now are announced as they close (to the other instances).
        await Promise.all([...leaving.keys()].map((userId) => settle(userId).catch(warned(userId))));
        return;
      }
      const until = Date.now() + graceMs;
      const users = new Map<number, number>(Array.from(leaving, ([userId, left]) => [userId, left.until]));
      for (const userId of await presence.online()) users.set(userId, until);
      for (const userId of leaving.keys()) stay(userId);
      if (graceMs > 0) await handoff.save(users);
    },
    async takeOver() {
      if (!handoff) return;
      for (const [userId, until] of await handoff.take()) if (until > Date.now()) leave(userId, until);
    },
    close() {
      for (const userId of leaving.keys()) stay(userId);
      presence.close();
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
