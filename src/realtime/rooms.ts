import type { Server, Socket } from "socket.io";
import type { ClientToServerEvents, InterServerEvents, ServerToClientEvents, SocketData } from "./contract.ts";

export type ChatServer = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
export type ChatSocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;

// Every socket joins the rooms of its user and its session, so revocation reaches them by
// name, and one room per channel it is a member of, so events reach members only.
export const userRoom = (userId: number) => `user:${userId}`;
export const sessionRoom = (sessionId: string) => `session:${sessionId}`;
export const channelRoom = (channelId: number) => `channel:${channelId}`;

/**
 * The rooms that get a Bun topic (native-fanout.ts): those broadcast to, channels' and users' (a
 * read marker goes to every socket of its user). A session's room is only ever disconnected, so
 * its sockets are found through socket.io's rooms, at no cost to Bun per socket.
 */
export const isBroadcastRoom = (room: string) => room.startsWith("channel:") || room.startsWith("user:");
