import type { Server, Socket } from "socket.io";
import type { Deliveries } from "./deliveries.ts";
import { logServerFault, toAppError, validationError, type AppError } from "../lib/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Logger } from "../lib/logger.ts";
import { messageInputSchema, typingInputSchema } from "../messages/messages.schemas.ts";
import type { MessageEvents, MessagesService } from "../messages/messages.service.ts";
import type { ChannelsService } from "../channels/channels.service.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";
import { tryConsume, type Limiter } from "../lib/rate-limit.ts";
import type { Presence } from "../presence/presence.service.ts";
import type { Authenticator } from "../sessions/authenticator.ts";
import { forgetRevoked, type Disconnector, type PeerNotifier } from "../sessions/revocations.ts";
import type { AccessGuard } from "../sessions/access-guard.ts";
import type { MembershipEvents } from "../channels/channels.service.ts";
import type { Db } from "../lib/db.ts";
import type { ClientToServerEvents, InterServerEvents, ServerToClientEvents, SocketData } from "./contract.ts";
import { channelRefusals } from "./channel-refusals.ts";
import { budgetEvents, type EventBudget } from "./event-budget.ts";
import { clientEvents } from "./events.ts";

export type ChatServer = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
type ChatSocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;

// Every socket joins the rooms of its user and its session, so revocation reaches them by
// name, and one room per channel it is a member of, so messages reach members only.
const userRoom = (userId: number) => `user:${userId}`;
const sessionRoom = (sessionId: string) => `session:${sessionId}`;
export const channelRoom = (channelId: number) => `channel:${channelId}`;

/**
 * Connections (Socket.IO clients) whose handshake to the default namespace is running. A client
 * sends one CONNECT; Socket.IO closes a connection that sends another once connected, but not
 * while the first is still in its middlewares: each extra one would run the handshake's queries
 * again and, once through, be one more socket on the same connection, with a budget of its own,
 * getting every broadcast once more. The same answer is given then: the connection is closed.
 */
const handshaking = new WeakSet<object>();
const handshakeEnded = (socket: ChatSocket) => handshaking.delete(socket.client);

/** Handshake guard: a live session's access token in `auth.token`, else exactly `Unauthorized`. */
export function authenticateSockets(io: ChatServer, authenticator: Authenticator): void {
  io.on("connection", handshakeEnded);
  io.use(async (socket, next) => {
    if (handshaking.has(socket.client)) {
      socket.conn.close();
      // Past a closed connection Socket.IO only cleans the socket up: this error goes nowhere.
      return next(new Error("Unauthorized"));
    }
    handshaking.add(socket.client);
    const token: unknown = socket.handshake.auth?.token;
    try {
      if (typeof token !== "string" || token.length > 4096) throw new Error("no token");
      socket.data.user = await authenticator.authenticate(token);
      // Not needed past this point (the socket re-checks its session, not its token): no
      // bearer token kept in memory for the life of every socket.
      delete socket.handshake.auth.token;
      next();
    } catch (error) {
      handshakeEnded(socket);
      // A database that does not answer says nothing about the token: a client told
      // "Unauthorized" would throw its session away and send its user back to the login.
      next(new Error(toAppError(error).code === "UNAVAILABLE" ? "Unavailable" : "Unauthorized"));
    }
  });
}

/**
 * Sockets between the read of their user's channels (loadSocketChannels) and their connection,
 * by server and user. They are in no room yet, so a join or leave applied to their user in that
 * window could not reach them through the user room: it is recorded here (channel id → member
 * afterwards) and applied on top of what was read when they connect (`settleChannels`).
 */
const handshakes = new WeakMap<ChatServer, Map<number, Map<ChatSocket, Map<number, boolean>>>>();

function handshakesOf(io: ChatServer, userId: number): Map<ChatSocket, Map<number, boolean>> | undefined {
  return handshakes.get(io)?.get(userId);
}

function startHandshake(io: ChatServer, socket: ChatSocket): void {
  let byUser = handshakes.get(io);
  if (!byUser) handshakes.set(io, (byUser = new Map()));
  const userId = socket.data.user.id;
  let sockets = byUser.get(userId);
  if (!sockets) byUser.set(userId, (sockets = new Map()));
  sockets.set(socket, new Map());
}

/** Stops recording changes for `socket`; returns those recorded. Idempotent. */
function endHandshake(io: ChatServer, socket: ChatSocket): Map<number, boolean> | undefined {
  const userId = socket.data.user.id;
  const sockets = handshakesOf(io, userId);
  const changes = sockets?.get(socket);
  sockets?.delete(socket);
  if (sockets?.size === 0) handshakes.get(io)?.delete(userId);
  return changes;
}

/** The channels read at the handshake, corrected by the joins and leaves applied since. */
function settleChannels(io: ChatServer, socket: ChatSocket): number[] {
  const changes = endHandshake(io, socket);
  if (!changes?.size) return socket.data.channelIds;
  const channelIds = new Set(socket.data.channelIds);
  for (const [channelId, member] of changes) {
    if (member) channelIds.add(channelId);
    else channelIds.delete(channelId);
  }
  return (socket.data.channelIds = [...channelIds]);
}

/**
 * Before a socket connects, the channels it belongs to, so it joins their rooms in the same
 * tick it connects and cannot miss a message published in between. Membership changes from
 * the start of that read until then are recorded on the socket and applied when it connects,
 * so a join or leave during a handshake is not lost (on this instance).
 */
export function loadSocketChannels(io: ChatServer, db: Db): void {
  io.use(async (socket, next) => {
    startHandshake(io, socket);
    // A handshake abandoned after this point (client gone, a later middleware refusing) ends here.
    socket.conn.once("close", () => endHandshake(io, socket));
    try {
      const rows = await db.channelMember.findMany({ where: { userId: socket.data.user.id }, select: { channelId: true } });
      socket.data.channelIds = rows.map((r) => r.channelId);
      next();
    } catch {
      endHandshake(io, socket);
      handshakeEnded(socket);
      next(new Error("Unavailable"));
    }
  });
}

/** Membership changes take effect at once on every socket of the user (with Redis, on every instance). */
export function socketMembership(io: ChatServer, { clustered }: { clustered: boolean }): MembershipEvents {
  const record = (userId: number, channelId: number, member: boolean) => {
    for (const changes of handshakesOf(io, userId)?.values() ?? []) changes.set(channelId, member);
  };
  // Another instance's change, for sockets handshaking here (its room changes arrive through the adapter).
  io.on("membership", ({ userId, channelId, member }) => record(userId, channelId, member));
  return {
    joined(userId, channelId) {
      record(userId, channelId, true);
      if (clustered) io.serverSideEmit("membership", { userId, channelId, member: true });
      io.in(userRoom(userId)).socketsJoin(channelRoom(channelId));
    },
    left(userId, channelId) {
      record(userId, channelId, false);
      if (clustered) io.serverSideEmit("membership", { userId, channelId, member: false });
      io.in(userRoom(userId)).socketsLeave(channelRoom(channelId));
    },
  };
}

/** Committed messages, edits and deletions go to the sockets of the channel's members only. */
export function messageEvents(io: ChatServer, deliveries?: Deliveries): MessageEvents {
  return {
    created: (message) => {
      io.to(channelRoom(message.channelId)).emit("message", message);
      deliveries?.delivered(message);
    },
    updated: (update) => io.to(channelRoom(update.channelId)).emit("message:updated", update),
    deleted: (deletion) => io.to(channelRoom(deletion.channelId)).emit("message:deleted", deletion),
  };
}

/** Tells every socket of a user that their read marker moved, so unread counts agree everywhere. */
export function readMarkerNotifier(io: ChatServer) {
  return (userId: number, channelId: number, lastReadId: number) => {
    io.to(userRoom(userId)).emit("channel:read", { channelId, lastReadId });
  };
}

/** Revocations reach the other instances' access caches (and theirs reach this one's). */
export function peerRevocations(io: ChatServer, guard: AccessGuard): PeerNotifier {
  io.on("revoked", (change) => forgetRevoked(guard, change));
  return (change) => io.serverSideEmit("revoked", change);
}

/** Cuts the sockets of ended sessions and banned users (with a Redis adapter, on every instance). */
export function socketDisconnector(io: ChatServer): Disconnector {
  return {
    sessions(sessionIds) {
      io.in(sessionIds.map(sessionRoom)).disconnectSockets(true);
    },
    user(userId) {
      io.in(userRoom(userId)).disconnectSockets(true);
    },
  };
}

/**
 * Runs one client event: the ack, if the client asked for one, is always the last argument
 * and gets `{ ok: true, ... }` or `{ ok: false, error }`; without one, a refusal goes to the
 * sender as `<event>:error`. Either way the connection stays up.
 */
function onEvent<R extends object>(
  socket: ChatSocket,
  event: "message" | "typing",
  logger: Logger,
  run: (payload: unknown) => Promise<R>,
  outcome?: (error?: AppError) => void,
): void {
  socket.on(event, async (...args: unknown[]) => {
    const ack = typeof args.at(-1) === "function" ? (args.pop() as (result: unknown) => void) : undefined;
    try {
      const result = await run(args[0]);
      outcome?.();
      ack?.({ ok: true, ...result });
    } catch (error) {
      const appError = toAppError(error);
      outcome?.(appError);
      logServerFault(logger, appError, error, { userId: socket.data.user.id, socketId: socket.id, event });
      if (ack) ack({ ok: false, error: appError.toBody() });
      else socket.emit(`${event}:error`, appError.toBody());
    }
  });
}

const clientEventNames: ReadonlySet<string> = new Set(Object.keys(clientEvents));

/** Wires the client events to the same services the REST routes call. */
export function handleChatEvents(
  io: ChatServer,
  deps: {
    messages: MessagesService;
    channels: ChannelsService;
    presence: Presence;
    typingLimiter?: Limiter;
    /** SOCKET_EVENT_RATE and SOCKET_EVENT_REFUSALS (event-budget.ts). */
    eventBudget: EventBudget;
    authenticator: Authenticator;
    logger: Logger;
    metrics: Metrics;
  },
): void {
  const { messages, channels, presence, typingLimiter, eventBudget, authenticator, logger, metrics } = deps;
  io.on("connection", (socket: ChatSocket) => {
    const { id: userId, sessionId } = socket.data.user;

    // Before any handler, for every event of any name: past its budget an event goes no further.
    budgetEvents(socket, eventBudget, {
      events: clientEventNames,
      logger,
      onRefused: metrics.socketEventRefused,
      onCut: metrics.abusiveClientDropped,
    });

    // Handlers first, synchronously: an event sent right after connecting must find them.
    onEvent(
      socket,
      "message",
      logger,
      async (payload) => {
        const parsed = messageInputSchema.safeParse(payload);
        if (!parsed.success) throw validationError(parsed.error.issues, "Message failed validation");
        const author = await authenticator.current(socket.data.user);
        // As for typing: the socket's rooms follow membership, so being in the channel's room
        // settles it without a query; otherwise the database says why not (NOT_FOUND or FORBIDDEN).
        const knownMember = socket.rooms.has(channelRoom(parsed.data.channelId ?? GENERAL_CHANNEL_ID));
        return { message: await messages.send(author, parsed.data, { knownMember }) };
      },
      (error) => (error ? metrics.messageRejected("socket", error.code) : metrics.messageAccepted("socket")),
    );

    const refusals = channelRefusals();
    onEvent(socket, "typing", logger, async (payload) => {
      const parsed = typingInputSchema.safeParse(payload);
      if (!parsed.success) throw validationError(parsed.error.issues, "Typing event failed validation");
      const { channelId } = parsed.data;
      // From memory: one query per session on a cache miss, shared by the events waiting for it.
      await authenticator.current(socket.data.user);
      // The socket's rooms follow membership; only when it is not in the room does the
      // database say why (NOT_FOUND or FORBIDDEN, as over REST), once for a while.
      if (!socket.rooms.has(channelRoom(channelId))) await refusals(channelId, () => channels.assertMember(userId, channelId));
      // Throttled per user and channel: within the window, further typing events are dropped quietly.
      if (await tryConsume(typingLimiter, `${userId}:${channelId}`)) socket.to(channelRoom(channelId)).except(userRoom(userId)).emit("typing", { channelId, userId });
      return {};
    });

    // Presence counts users, not sockets: only the first socket in and the last out are news.
    // A socket counts once its session has been re-checked below, so one cut at once is never announced.
    let counted = false;
    const announce = async (changed: Promise<boolean>, status: "online" | "offline") => {
      try {
        if (await changed) io.emit("presence", { userId, status });
      } catch (error) {
        logger.warn({ err: error, userId }, "presence could not be updated");
      }
    };
    const transport = () => socket.conn.transport.name;
    logger.info({ socketId: socket.id, userId, transport: transport() }, "socket connected");
    socket.on("disconnect", (reason) => {
      logger.info({ socketId: socket.id, userId, transport: transport(), reason }, "socket disconnected");
      if (counted) void announce(presence.disconnected(userId), "offline");
    });

    void (async () => {
      // Synchronously with settling: from here on, membership changes reach it through its user room.
      await socket.join([userRoom(userId), sessionRoom(sessionId), ...settleChannels(io, socket).map(channelRoom)]);
      // A revocation between the handshake and joining the rooms would have missed this socket.
      const alive = await authenticator.current(socket.data.user).then(
        () => true,
        () => false,
      );
      if (!alive) return void socket.disconnect(true);
      if (!socket.connected) return;
      counted = true;
      await announce(presence.connected(userId), "online");
    })();
  });
}
