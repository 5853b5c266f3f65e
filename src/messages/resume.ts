import type { Db } from "../lib/db.ts";
import { engineSession, websocketOf } from "../lib/internals.ts";
import { validationError } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import { channelRoom, type ChatServer, type ChatSocket } from "../realtime/rooms.ts";
import { isLimited, logBounds, readEvents } from "./channel-log.ts";
import type { Sequencer } from "./sequencer.ts";
import type { LoggedEvent } from "./channel-log.ts";
import { sinceSchema } from "./messages.schemas.ts";

/**
 * Resume in the handshake (api.md §11): `auth.since` names, per channel, the last seq the client
 * has. Such a channel's room is joined only once the client has been sent every event after it:
 * read from the log up to what this instance has delivered to its sockets (the sequencer's
 * `deliveredUpTo`), again while that moves, and the room joined in the same tick as the last check,
 * so every later event reaches the socket through the room. Replay and live traffic meet exactly:
 * no gap, no duplicate, whichever instance committed what meanwhile.
 */

const READ_LIMIT = 1_000;

/**
 * Handshake middleware: a malformed `auth.since` refuses the connection with a message that says
 * what is wrong (connect_error `message`, and §0's error body in `data`), never `Unauthorized`: the
 * token may be fine. Without `since`, nothing changes.
 */
export function parseSince(io: ChatServer): void {
  io.use((socket, next) => {
    const raw: unknown = socket.handshake.auth?.since;
    if (raw === undefined) return next();
    const parsed = sinceSchema.safeParse(raw);
    if (!parsed.success) {
      const error = validationError(parsed.error.issues.map((issue) => ({ ...issue, path: ["since", ...issue.path] })), "Invalid auth.since");
      const refusal = new Error(`Invalid auth.since: ${error.details?.map((d) => `${d.path} ${d.message}`).join("; ")}`) as Error & { data?: unknown };
      refusal.data = { error: error.toBody() };
      return next(refusal);
    }
    socket.data.since = new Map(Object.entries(parsed.data).map(([channelId, seq]) => [Number(channelId), seq]));
    // Not needed past this point: nothing kept in memory for the life of the socket.
    delete socket.handshake.auth.since;
    next();
  });
}

export interface Resumer {
  /**
   * Joins `socket` to its channels' rooms: at once for those without `since`, after their replay for
   * the others. Channels the user is not in were never in `channelIds`: ignored, nothing revealed.
   */
  joinChannels(socket: ChatSocket, channelIds: number[]): void;
  /** A membership change of `userId`: a channel left while it was being replayed is not joined after. */
  membershipChanged(userId: number, channelId: number, member: boolean): void;
}

export function createResumer(deps: { db: Db; sequencer: Pick<Sequencer<LoggedEvent>, "deliveredUpTo" | "ready">; maxEvents: number; logger: Logger }): Resumer {
  const { db, sequencer, maxEvents, logger } = deps;
  /**
   * Reads in flight, by what they read: after a deploy or a network blip every client of a channel
   * comes back at once with the same `since`, and one query then answers all of them instead of one
   * each (a reconnect storm would otherwise queue a thousand identical reads for the pool). Only while
   * in flight: a later read sees later commits.
   */
  const inFlight = new Map<string, Promise<unknown>>();
  function shared<T>(key: string, read: () => Promise<T>): Promise<T> {
    let pending = inFlight.get(key) as Promise<T> | undefined;
    if (!pending) {
      pending = read().finally(() => inFlight.delete(key));
      inFlight.set(key, pending);
    }
    return pending;
  }

  /** Per user, the sockets replaying, with the channels each still has to join. */
  const replaying = new Map<number, Map<ChatSocket, Set<number>>>();

  function track(socket: ChatSocket, channelIds: number[]): Set<number> {
    const userId = socket.data.user.id;
    let sockets = replaying.get(userId);
    if (!sockets) replaying.set(userId, (sockets = new Map()));
    const pending = new Set(channelIds);
    sockets.set(socket, pending);
    return pending;
  }

  function done(socket: ChatSocket, channelId: number): void {
    const userId = socket.data.user.id;
    const sockets = replaying.get(userId);
    const pending = sockets?.get(socket);
    pending?.delete(channelId);
    if (pending?.size === 0) sockets!.delete(socket);
    if (sockets?.size === 0) replaying.delete(userId);
  }

  /** Still to be joined: connected, and the channel not left meanwhile. */
  const stillWanted = (socket: ChatSocket, channelId: number) => socket.connected && (replaying.get(socket.data.user.id)?.get(socket)?.has(channelId) ?? false);

  /** Tells the client to reload the channel, and joins it in the same tick: live events after `head` follow. */
  function resync(socket: ChatSocket, channelId: number): void {
    if (!stillWanted(socket, channelId)) return done(socket, channelId);
    const head = sequencer.deliveredUpTo(channelId);
    socket.emit("resync", { channelId, head });
    void socket.join(channelRoom(channelId));
    done(socket, channelId);
  }

  async function replay(socket: ChatSocket, channelId: number, since: number): Promise<void> {
    await sequencer.ready();
    const bounds = await shared(`bounds:${channelId}`, () => logBounds(db, channelId));
    if (!bounds || isLimited(bounds, since) || bounds.head - since > maxEvents) return resync(socket, channelId);
    let last = since;
    for (;;) {
      if (!stillWanted(socket, channelId)) return done(socket, channelId);
      const delivered = sequencer.deliveredUpTo(channelId);
      if (last >= delivered) {
        // The same tick as the check: every event after `last` reaches the socket through the room.
        void socket.join(channelRoom(channelId));
        return done(socket, channelId);
      }
      const events = await shared(`events:${channelId}:${last}:${delivered}`, () => readEvents(db, channelId, last, delivered, READ_LIMIT));
      // Pruned between the bounds and this read: no longer replayable.
      if (events[0]?.seq !== last + 1) return resync(socket, channelId);
      if (!stillWanted(socket, channelId)) return done(socket, channelId);
      const send = () => {
        for (const event of events) {
          if (event.seq !== last + 1) break;
          socket.emit(event.type, event.data as never);
          last = event.seq;
        }
      };
      // On websocket the transport sends each packet at once: corked, the page goes out in one
      // write instead of one per event (a storm replays a million events).
      const websocket = websocketOf(engineSession(socket));
      if (websocket) websocket.cork(send);
      else send();
    }
  }

  return {
    joinChannels(socket, channelIds) {
      const since = socket.data.since;
      const resumed = since ? channelIds.filter((id) => since.has(id)) : [];
      const now = resumed.length === 0 ? channelIds : channelIds.filter((id) => !since!.has(id));
      void socket.join(now.map(channelRoom));
      if (resumed.length === 0) return;
      track(socket, resumed);
      for (const channelId of resumed) {
        replay(socket, channelId, since!.get(channelId)!).catch((error) => {
          // The database did not answer: the client reloads the channel once it can.
          logger.warn({ err: error, channelId, socketId: socket.id }, "resume could not replay a channel");
          resync(socket, channelId);
        });
      }
      socket.data.since = undefined;
    },
    membershipChanged(userId, channelId, member) {
      if (member) return;
      for (const pending of replaying.get(userId)?.values() ?? []) pending.delete(channelId);
    },
  };
}
