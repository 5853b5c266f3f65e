/**
 * What a TypeScript front end imports to call this API with types (api.md §9):
 *
 *   import { hc } from "hono/client";
 *   import { io, type Socket } from "socket.io-client";
 *   import type { AppType, ClientToServerEvents, ServerToClientEvents } from "chat-backend/src/client.ts";
 *
 *   const api = hc<AppType>("http://localhost:3000", { headers: { authorization: `Bearer ${token}` } });
 *   const res = await api.api.messages.$get({ query: { limit: "20" } });
 *   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, { auth: { token } });
 *
 * Types only: nothing of the server is bundled into the client.
 */
export type { AppType } from "./app.ts";
export type { ClientToServerEvents, ServerToClientEvents } from "./realtime/contract.ts";
export type { ClientEventAck } from "./realtime/events.ts";
export type { ChatMessage, DeletedMessage, HistoryEntry, MessageUpdated, MessageDeleted, SearchHit } from "./messages/messages.schemas.ts";
export type { ChannelView as Channel } from "./channels/channels.schemas.ts";
export type { ErrorBody } from "./lib/errors.ts";
