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
 * Resume (api.md §11): `message`, `message:updated` and `message:deleted` carry their channel's `seq`;
 * keep the last one applied per channel and hand them back on every (re)connection, with `auth` as a
 * function so each attempt sends the current ones:
 *
 *   io(url, { auth: (cb) => cb({ token, since: { [channelId]: lastSeq } }) });
 *
 * The server replays what came after, in order, then live events; a channel it cannot replay gets
 * `resync { channelId, head }` instead: reload its newest history page and continue from `head`.
 * Over REST: `api.api.channels[":id"].events.$get({ param: { id }, query: { after } })` → `EventsPage`.
 *
 * Types only: nothing of the server is bundled into the client.
 */
export type { AppType } from "./app.ts";
export type { ClientToServerEvents, ServerToClientEvents } from "./realtime/contract.ts";
export type { ClientEventAck } from "./realtime/events.ts";
export type {
  ChannelEvent,
  ChatMessage,
  DeletedMessage,
  EventsPage,
  HistoryEntry,
  LiveMessage,
  MessageDeleted,
  MessageUpdated,
  SearchHit,
  SentMessage,
} from "./messages/messages.schemas.ts";
export type { ChannelView as Channel } from "./channels/channels.schemas.ts";
export type { ErrorBody } from "./lib/errors.ts";
