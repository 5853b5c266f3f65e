import { afterEach } from "bun:test";
import { connectTo } from "./process.ts";
import type { ChatClient, Registered, Transport } from "./server.ts";

/**
 * Where a socket connects: a `TestServer` (its own `connect`), or a server process of
 * helpers/process.ts (`connectTo` its url).
 */
export type SocketTarget = { connect(token: string, transport?: Transport): Promise<ChatClient> } | { url: string };

/**
 * Sockets opened by one test, closed after it so no test leaks listeners into the next. Call it at
 * the level whose tests it serves (file or describe): its afterEach runs after each of them, in
 * order with that level's other afterEach hooks (Bun runs them in the order they were registered).
 *
 * `connect(who, transport, server)`: a connected socket of `who` (a registered user or a bare token)
 * over `transport` (websocket unless given) on `server` (the tracker's own unless given).
 * `track(socket)`: a socket opened some other way, closed after the test too; returns it.
 */
export function socketTracker(defaultServer?: SocketTarget) {
  const opened: { disconnect(): unknown }[] = [];
  afterEach(() => {
    for (const socket of opened.splice(0)) socket.disconnect();
  });
  const track = <S extends { disconnect(): unknown }>(socket: S): S => {
    opened.push(socket);
    return socket;
  };
  const connect = async (who: Registered | string, transport: Transport = "websocket", server: SocketTarget | undefined = defaultServer): Promise<ChatClient> => {
    if (!server) throw new Error("socketTracker: no server to connect to");
    const token = typeof who === "string" ? who : who.token;
    return track(await ("connect" in server ? server.connect(token, transport) : connectTo(server.url, token, transport)));
  };
  return { connect, track };
}
