import type { Server } from "bun";
import { Server as Engine } from "@socket.io/bun-engine";
import { corsOrigin, type App } from "./app.ts";
import type { Config } from "./config.ts";
import { checkLibraryVersions, engineSession, queuedPackets } from "./lib/internals.ts";
import { drainingHeaders, shuttingDown } from "./middleware/draining.ts";
import { enableNativeFanout } from "./realtime/native-fanout.ts";
import { isBroadcastRoom } from "./realtime/rooms.ts";
import { boundedPoll, engineBadRequest, isBadUpgrade } from "./realtime/socket-requests.ts";

export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  port: number;
  /**
   * Graceful stop: turn away new requests and handshakes (503), let in-flight requests
   * and message writes finish and their acks reach the clients, close every socket, then
   * stop listening. Bounded by SHUTDOWN_TIMEOUT_MS.
   */
  stop(): Promise<void>;
}

const socketPath = "/socket.io/";
const ackFlushLimitMs = 2_000;

/** The answer to a new Socket.IO handshake while draining (REST gets its own from the app). */
function handshakeRefused(): Response {
  return Response.json({ error: shuttingDown().toBody() }, { status: 503, headers: drainingHeaders });
}

/** Resolves once no Socket.IO connection has packets waiting to be written. */
async function acksDelivered(io: App["io"]): Promise<void> {
  const pending = () => [...io.of("/").sockets.values()].some((socket) => queuedPackets(engineSession(socket)).length > 0);
  while (pending()) await Bun.sleep(10);
}

/**
 * Bun.serve's `idleTimeout` (seconds without a byte on a connection): a long poll is answered by
 * the next ping at the latest (pingInterval) and the client then has pingTimeout to come back, so a
 * connection must outlive both, with margin. 60 s with the defaults; Bun allows at most 255.
 */
export function httpIdleTimeoutSeconds(config: Pick<Config, "SOCKET_PING_INTERVAL_MS" | "SOCKET_PING_TIMEOUT_MS">): number {
  return Math.min(255, Math.ceil((config.SOCKET_PING_INTERVAL_MS + config.SOCKET_PING_TIMEOUT_MS) / 1000) + 15);
}

/**
 * Bun.serve's `maxRequestBodySize`, a backstop for any body nothing else counts (Bun's default is
 * 128 MiB). The service's own limits answer first, in their own shapes, and count a chunked body as
 * it streams (hono's bodyLimit for REST, `boundedPoll` for polling), so no body past them is held.
 * Bun refuses one past this by itself, with a bare 413 before the service sees a declared one, so it
 * sits well above both limits: twice the larger, and at least 1 MiB.
 */
export function maxRequestBodyBytes(config: Pick<Config, "BODY_LIMIT_BYTES" | "SOCKET_MAX_BUFFER_BYTES">): number {
  return Math.max(2 ** 20, 2 * Math.max(config.BODY_LIMIT_BYTES, config.SOCKET_MAX_BUFFER_BYTES));
}

/** Serves REST and Socket.IO on one port with one `Bun.serve`. */
export function serve(
  { app, io, services, lifecycle, slowClients, handshakes, fanout, pruning, logger }: App,
  config: Pick<
    Config,
    | "PORT"
    | "HOST"
    | "CORS_ORIGINS"
    | "SOCKET_MAX_BUFFER_BYTES"
    | "BODY_LIMIT_BYTES"
    | "SHUTDOWN_TIMEOUT_MS"
    | "SOCKET_PING_INTERVAL_MS"
    | "SOCKET_PING_TIMEOUT_MS"
  >,
): RunningServer {
  // What the fan-out, the slow-client guard and the shutdown read of the libraries' internals holds
  // for the versions src/lib/internals.ts was written for only: refuse to serve with any other.
  checkLibraryVersions();
  const engine = new Engine({
    path: socketPath,
    maxHttpBufferSize: config.SOCKET_MAX_BUFFER_BYTES,
    // A client that has not answered a ping within pingTimeout is dropped (half-open connections included).
    pingInterval: config.SOCKET_PING_INTERVAL_MS,
    pingTimeout: config.SOCKET_PING_TIMEOUT_MS,
    cors: config.CORS_ORIGINS.length > 0 ? { origin: corsOrigin(config.CORS_ORIGINS) } : undefined,
  });
  io.bind(engine);
  handshakes.watch(engine);

  const { websocket } = engine.handler();
  const server = Bun.serve({
    port: config.PORT,
    hostname: config.HOST,
    websocket: slowClients.websocketHandler(websocket),
    idleTimeout: httpIdleTimeoutSeconds(config),
    maxRequestBodySize: maxRequestBodyBytes(config),
    // Not async itself: a REST request (the hot path) gets the app's answer with no extra promise.
    fetch(request, bunServer) {
      const url = new URL(request.url);
      const isSocket = url.pathname.startsWith(socketPath);
      if (!isSocket) return app.fetch(request, { server: bunServer });
      return socketRequest(request, url, bunServer);
    },
  });

  async function socketRequest(request: Request, url: URL, bunServer: Server<unknown>): Promise<Response> {
    // As the engine decides it: no sid, or an empty one (`?sid=`), opens a new session.
    const isHandshake = !url.searchParams.get("sid");
    // While draining, existing Socket.IO sessions keep polling (to collect their last
    // acks) but new handshakes are turned away.
    if (lifecycle.draining && isHandshake) return handshakeRefused();
    if (isBadUpgrade(request)) return engineBadRequest();
    if (isHandshake) {
      // Only a GET can open a session (the engine refuses any other method by itself).
      if (request.method !== "GET") return engine.handleRequest(request, bunServer);
      const refused = await handshakes.admit(request, bunServer);
      if (refused) return refused;
      try {
        return await engine.handleRequest(request, bunServer);
      } finally {
        handshakes.finished(request);
      }
    }
    const bounded = await boundedPoll(request, config.SOCKET_MAX_BUFFER_BYTES);
    return bounded instanceof Response ? bounded : engine.handleRequest(bounded, bunServer);
  }
  // Broadcasts to websocket clients: one encode and one Bun publish per room (see native-fanout.ts).
  enableNativeFanout(io, server, { publishBackpressured: slowClients.publishBackpressured, isTopic: isBroadcastRoom });

  let stopping: Promise<void> | undefined;
  return {
    url: `http://${server.hostname === "0.0.0.0" ? "127.0.0.1" : server.hostname}:${server.port}`,
    port: server.port ?? config.PORT,
    stop() {
      stopping ??= (async () => {
        const deadline = Bun.sleep(config.SHUTDOWN_TIMEOUT_MS);
        lifecycle.draining = true;
        // Refuse new messages and let accepted ones commit and be acknowledged.
        await Promise.race([services.messages.close(), deadline]);
        // Polling clients fetch their acks with a new request; give them the chance before closing.
        await Promise.race([acksDelivered(io), deadline, Bun.sleep(ackFlushLimitMs)]);
        // Before the sockets close: their users stay online through the restart (presence.socket.ts).
        await Promise.race([services.presence.handOff().catch((error) => logger.warn({ err: error }, "presence not handed over")), deadline]);
        await io.close();
        services.presence.close();
        fanout.close();
        pruning.stop();
        await Promise.race([server.stop(false), deadline]);
        await server.stop(true);
      })();
      return stopping;
    },
  };
}
