import DataLoader from "dataloader";
import { toAppError } from "../lib/errors.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Logger } from "../lib/logger.ts";
import type { Resumer } from "../messages/resume.ts";
import type { Authenticator } from "../sessions/authenticator.ts";
import type { Disconnector } from "../sessions/revocations.ts";
import type { MembershipEvents } from "../channels/channels.service.ts";
import { batchedLoads } from "../lib/batched-loads.ts";
import { poolOf, type Db } from "../lib/db.ts";
import { dropHandshakeRequest } from "../lib/internals.ts";
import { budgetEvents, type EventBudget } from "./event-budget.ts";
import { clientEvents } from "./events.ts";
import { channelRoom, sessionRoom, userRoom, type ChatServer, type ChatSocket } from "./rooms.ts";

export type { ChatServer } from "./rooms.ts";

const clientEventNames: ReadonlySet<string> = new Set(Object.keys(clientEvents));

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

/** Each handshaking socket's listener for its connection closing first (it ends the handshake), removed once connected. */
const abandonedOnClose = new WeakMap<ChatSocket, () => void>();

/** The channels read at the handshake, corrected by the joins and leaves applied since. */
function settleChannels(io: ChatServer, socket: ChatSocket): number[] {
  const abandoned = abandonedOnClose.get(socket);
  if (abandoned) socket.conn.off("close", abandoned);
  abandonedOnClose.delete(socket);
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
  // The handshakes of one tick (a reconnect storm brings hundreds) read their channels in one
  // prepared statement, straight to node-postgres (as access-guard.ts does, for the same reason).
  const pool = poolOf(db);
  const channelsOf = new DataLoader(
    async (userIds: readonly number[]) => {
      const { rows } = await pool.query<{ user_id: number; channel_ids: number[] }>({
        name: "socket-channels",
        text: "SELECT user_id, array_agg(channel_id) AS channel_ids FROM channel_members WHERE user_id = ANY($1::int[]) GROUP BY user_id",
        values: [userIds],
      });
      const byUser = new Map(rows.map((row) => [row.user_id, row.channel_ids]));
      return userIds.map((id) => byUser.get(id) ?? []);
    },
    batchedLoads(),
  );
  io.use(async (socket, next) => {
    startHandshake(io, socket);
    // A handshake abandoned after this point (client gone, a later middleware refusing) ends here.
    const abandoned = () => endHandshake(io, socket);
    abandonedOnClose.set(socket, abandoned);
    socket.conn.once("close", abandoned);
    try {
      // A copy: two sockets of one user in one batch share the loaded array.
      socket.data.channelIds = [...(await channelsOf.load(socket.data.user.id))];
      next();
    } catch {
      endHandshake(io, socket);
      handshakeEnded(socket);
      next(new Error("Unavailable"));
    }
  });
}

/**
 * Membership changes take effect at once on every socket of the user (with Redis, on every
 * instance), and each of those sockets is told: `channel:joined` / `channel:left { channelId }`.
 * The event follows the room change to the same user room: in one process the room change is
 * applied first, and with Redis both travel in the adapter's one stream in that order, so on every
 * instance a socket told it joined is already in the channel's room.
 */
export function socketMembership(io: ChatServer, { clustered, resumer }: { clustered: boolean; resumer: Pick<Resumer, "membershipChanged"> }): MembershipEvents {
  const record = (userId: number, channelId: number, member: boolean) => {
    for (const changes of handshakesOf(io, userId)?.values() ?? []) changes.set(channelId, member);
    // Sockets replaying the channel (resume.ts) are in no room of it yet either.
    resumer.membershipChanged(userId, channelId, member);
  };
  // Another instance's change, for sockets handshaking here (its room changes arrive through the adapter).
  io.on("membership", ({ userId, channelId, member }) => record(userId, channelId, member));
  return {
    joined(userId, channelId) {
      record(userId, channelId, true);
      if (clustered) io.serverSideEmit("membership", { userId, channelId, member: true });
      io.in(userRoom(userId)).socketsJoin(channelRoom(channelId));
      io.to(userRoom(userId)).emit("channel:joined", { channelId });
    },
    left(userId, channelId) {
      record(userId, channelId, false);
      if (clustered) io.serverSideEmit("membership", { userId, channelId, member: false });
      io.in(userRoom(userId)).socketsLeave(channelRoom(channelId));
      io.to(userRoom(userId)).emit("channel:left", { channelId });
    },
  };
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
 * Every connected socket: its event budget, then each feature's handlers (synchronously, so an
 * event sent right after connecting finds them), then its rooms (resume.ts: at once, or after the
 * replay of the channels it resumes), then the re-check of its session and its presence.
 */
export function handleConnections(
  io: ChatServer,
  deps: {
    /** SOCKET_EVENT_RATE and SOCKET_EVENT_REFUSALS (event-budget.ts). */
    eventBudget: EventBudget;
    /** Each feature's socket handlers (messages/messages.socket.ts, channels/channels.socket.ts). */
    handlers: ((socket: ChatSocket) => void)[];
    resumer: Resumer;
    presence: { counted(socket: ChatSocket): Promise<void> };
    authenticator: Authenticator;
    logger: Logger;
    metrics: Metrics;
  },
): void {
  const { eventBudget, handlers, resumer, presence, authenticator, logger, metrics } = deps;
  // One listener for every socket (Socket.IO calls it with the socket as `this`), not one each.
  function disconnected(this: ChatSocket, reason: string) {
    logger.info({ socketId: this.id, userId: this.data.user.id, transport: this.conn.transport.name, reason }, "socket disconnected");
  }
  io.on("connection", (socket: ChatSocket) => {
    const { id: userId, sessionId } = socket.data.user;
    dropHandshakeRequest(socket);

    // Before any handler, for every event of any name: past its budget an event goes no further.
    budgetEvents(socket, eventBudget, {
      events: clientEventNames,
      logger,
      onRefused: metrics.socketEventRefused,
      onCut: metrics.abusiveClientDropped,
    });
    for (const handle of handlers) handle(socket);

    logger.info({ socketId: socket.id, userId, transport: socket.conn.transport.name }, "socket connected");
    socket.on("disconnect", disconnected);

    // Synchronously with settling: from here on, membership changes reach it through its user room.
    void socket.join([userRoom(userId), sessionRoom(sessionId)]);
    resumer.joinChannels(socket, settleChannels(io, socket));
    void (async () => {
      // A revocation between the handshake and joining the rooms would have missed this socket.
      const alive = await authenticator.current(socket.data.user).then(
        () => true,
        () => false,
      );
      if (!alive) return void socket.disconnect(true);
      if (!socket.connected) return;
      await presence.counted(socket);
    })();
  });
}
