import type { ErrorBody } from "../lib/errors.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { ChatMessage } from "../messages/messages.schemas.ts";

/** The result every acknowledged event returns (api.md §3). */
export type Ack<T> = { ok: true; message: T } | { ok: false; error: ErrorBody };

/** Events a client emits. Payloads are `unknown` on purpose: they are validated, not trusted. */
export interface ClientToServerEvents {
  message: (payload: unknown, ack?: (result: Ack<ChatMessage>) => void) => void;
}

/** Events the server emits. */
export interface ServerToClientEvents {
  message: (message: ChatMessage) => void;
  "message:error": (error: ErrorBody) => void;
  /** The caller's read marker moved (from any of their sockets or REST). */
  "channel:read": (marker: { channelId: number; lastReadId: number }) => void;
}

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface InterServerEvents {}

export interface SocketData {
  user: AuthUser;
  /** Channels the user belonged to at connection; rooms follow membership changes after that. */
  channelIds: number[];
}
