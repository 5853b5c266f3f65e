import type { Server as Engine } from "@socket.io/bun-engine";
import type { Server as BunServer } from "bun";
import { clientIp } from "../lib/client-ip.ts";
import { engineSession, type EngineSession } from "../lib/internals.ts";
import { AppError, rateLimited } from "../lib/errors.ts";
import { consumeOrThrow, type Limiter } from "../lib/rate-limit.ts";
import type { ChatServer } from "./rooms.ts";

// Caps on what an unauthenticated or over-eager client can make the server hold (api.md §7
// "Connections"). A new Engine.IO session costs memory before any token is checked, and until
// it authenticates it is no Socket.IO socket, so nothing else counts it: 20,000 handshakes held
// 150 MB for socket.io's 45 s connect timeout. Here: a handshake rate and a cap on sessions not
// yet authenticated, both per client address (the address REST limits use), checked before the
// engine sees the request; SOCKET_CONNECT_TIMEOUT_MS (Socket.IO's connectTimeout, set in app.ts)
// ends such a session; and a cap on one user's connected sockets.

type ChatSocket = Parameters<Parameters<ChatServer["use"]>[0]>[0];

/** A handshake from its admission until it is authenticated or gone: one pending slot of its address. */
interface Slot {
  address: string;
  /** Until released: the request it was admitted with (the engine keeps that alive as long as the session). */
  request?: Request;
  session?: EngineSession;
  /** Ends the session if it is still pending at the connect timeout. */
  deadline?: ReturnType<typeof setTimeout>;
  released: boolean;
}

export interface HandshakeLimits {
  /**
   * For a new handshake (no `sid`), before the engine sees it: undefined to let it through (it then
   * holds a pending slot of its address until `finished`, or until its session authenticates or
   * closes), or the 429 to answer.
   */
  admit(request: Request, server: BunServer<unknown>): Promise<Response | undefined>;
  /** After the engine answered an admitted handshake: frees its slot if it made no session. */
  finished(request: Request): void;
  /** Follows the engine's sessions: which are open, and which have not authenticated yet. */
  watch(engine: Engine): void;
  /** Handshakes admitted and sessions open that have not authenticated yet (socketio_pending_handshakes). */
  pending(): number;
  /** Engine.IO sessions open, authenticated or not (socketio_engine_sessions). */
  sessions(): number;
}

// Request ids taken as given elsewhere (hono's requestId): word characters, `-` and `=`.
const saneRequestId = /^[\w\-=]{1,255}$/;

/** A refusal in the §0 shape, with Retry-After, as the REST side gives it. */
function refusal(request: Request, error: AppError): Response {
  const given = request.headers.get("x-request-id");
  const headers = {
    "retry-after": String(error.retryAfter ?? 1),
    "x-request-id": given !== null && saneRequestId.test(given) ? given : crypto.randomUUID(),
  };
  return Response.json({ error: error.toBody() }, { status: error.status, headers });
}

export function handshakeLimits(
  io: ChatServer,
  {
    limiter,
    maxPendingPerIp,
    trustedHops,
    connectTimeoutMs,
  }: { limiter?: Limiter; maxPendingPerIp: number | null; trustedHops: number; connectTimeoutMs: number },
): HandshakeLimits {
  const pendingByAddress = new Map<string, number>();
  let pendingTotal = 0;
  let openSessions = 0;
  const slotOfRequest = new WeakMap<Request, Slot>();
  const slotOfSession = new Map<EngineSession, Slot>();

  const take = (address: string): Slot => {
    pendingByAddress.set(address, (pendingByAddress.get(address) ?? 0) + 1);
    pendingTotal += 1;
    return { address, released: false };
  };
  const release = (slot: Slot) => {
    if (slot.released) return;
    slot.released = true;
    pendingTotal -= 1;
    const left = (pendingByAddress.get(slot.address) ?? 1) - 1;
    if (left > 0) pendingByAddress.set(slot.address, left);
    else pendingByAddress.delete(slot.address);
    clearTimeout(slot.deadline);
    slot.deadline = undefined;
    if (slot.request) slotOfRequest.delete(slot.request);
    slot.request = undefined;
    if (slot.session) slotOfSession.delete(slot.session);
  };

  // A session is pending until its Socket.IO socket connects (every io.use guard passed).
  io.on("connection", (socket) => {
    const slot = slotOfSession.get(engineSession(socket));
    if (slot) release(slot);
  });

  return {
    async admit(request, server) {
      const address = clientIp(request.headers.get("x-forwarded-for") ?? undefined, server.requestIP(request)?.address, trustedHops);
      if (maxPendingPerIp !== null && (pendingByAddress.get(address) ?? 0) >= maxPendingPerIp) {
        // A place frees up within the connect timeout at the latest.
        const wait = rateLimited("Too many connections from this address are still handshaking; try again later", connectTimeoutMs);
        return refusal(request, wait);
      }
      // Taken before the rate check's await, so a burst of concurrent handshakes cannot all pass the cap.
      const slot = take(address);
      try {
        await consumeOrThrow(limiter, address, "Too many connection attempts from this address; try again later");
      } catch (error) {
        release(slot);
        if (error instanceof AppError) return refusal(request, error);
        throw error;
      }
      slot.request = request;
      slotOfRequest.set(request, slot);
      return undefined;
    },
    finished(request) {
      const slot = slotOfRequest.get(request);
      if (slot && !slot.session) release(slot);
    },
    watch(engine) {
      // One listener for every session (the engine calls it with the session as `this`), not one each.
      function closed(this: EngineSession) {
        openSessions -= 1;
        const slot = slotOfSession.get(this);
        if (slot) release(slot);
      }
      engine.on("connection", (session, request) => {
        openSessions += 1;
        session.once("close", closed);
        const slot = slotOfRequest.get(request);
        if (!slot || slot.released) return;
        slot.session = session;
        slotOfSession.set(session, slot);
        // Socket.IO's connect timeout (its timer, set first, fires first) closes the session
        // gracefully: after the packets waiting for it are written. A polling client that stopped
        // polling never collects them (a CONNECT_ERROR, say), and the session would live on until
        // its ping timeout (45 s by default); so whatever is still pending then is closed outright.
        slot.deadline = setTimeout(() => session.transport.close(), connectTimeoutMs);
      });
    },
    pending: () => pendingTotal,
    sessions: () => openSessions,
  };
}

/** The connect_error message past SOCKET_MAX_PER_USER (api.md §3). */
export const tooManyConnections = "Too many connections";

/**
 * At most `max` sockets of one user connected to this instance (many tabs and devices fit; a
 * script opening thousands does not). Registered after the other io.use guards, so a socket that
 * passes is connected in the same tick; its place is given back when it disconnects, when its
 * connection closes, or, should it not have connected within the connect timeout, then.
 */
export function capSocketsPerUser(io: ChatServer, { max, connectTimeoutMs }: { max: number | null; connectTimeoutMs: number }): void {
  if (max === null) return;
  const byUser = new Map<number, Set<ChatSocket>>();
  /** Admitted sockets not connected yet, by their connection: the timer that gives the place back if they never do. */
  const admitted = new WeakMap<object, { socket: ChatSocket; unconnected: ReturnType<typeof setTimeout> }>();
  /** It connected, or its place is given back: no longer waited for. */
  const endAdmission = (socket: ChatSocket) => {
    const pending = admitted.get(socket.conn);
    if (pending?.socket !== socket) return;
    clearTimeout(pending.unconnected);
    socket.conn.off("close", connectionClosed);
    admitted.delete(socket.conn);
  };
  const release = (socket: ChatSocket) => {
    endAdmission(socket);
    const userId = socket.data.user.id;
    const sockets = byUser.get(userId);
    if (!sockets?.delete(socket)) return;
    if (sockets.size === 0) byUser.delete(userId);
  };
  // Shared by every socket and connection (called with it as `this`): nothing per socket but its place.
  function disconnected(this: ChatSocket) {
    release(this);
  }
  function connectionClosed(this: object) {
    const pending = admitted.get(this);
    if (pending) release(pending.socket);
  }
  // Connected: from now on its "disconnect" gives the place back.
  io.on("connection", endAdmission);
  io.use((socket, next) => {
    const userId = socket.data.user.id;
    const sockets = byUser.get(userId) ?? new Set<ChatSocket>();
    if (sockets.size >= max) return next(new Error(tooManyConnections));
    byUser.set(userId, sockets);
    sockets.add(socket);
    admitted.set(socket.conn, { socket, unconnected: setTimeout(() => socket.connected || release(socket), connectTimeoutMs) });
    socket.once("disconnect", disconnected);
    socket.conn.once("close", connectionClosed);
    next();
  });
}
