import type { ErrorBody } from "../lib/errors.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { ChatMessage, HistoryEntry, MessageDeleted, MessageUpdated } from "../messages/messages.schemas.ts";

/** The result every acknowledged event returns (api.md §3). */
export type Ack<T> = { ok: true; message: T } | { ok: false; error: ErrorBody };

/** Events a client emits. Payloads are `unknown` on purpose: they are validated, not trusted. */
export interface ClientToServerEvents {
  /** The ack carries the stored message (for a repeated clientId, the first one, or its tombstone if deleted). */
  message: (payload: unknown, ack?: (result: Ack<HistoryEntry>) => void) => void;
  /** `{ channelId }`; relayed to the channel's other members at most once per throttle window. */
  typing: (payload: unknown, ack?: (result: { ok: true } | { ok: false; error: ErrorBody }) => void) => void;
}

/** Events the server emits. */
export interface ServerToClientEvents {
  message: (message: ChatMessage) => void;
  "message:updated": (update: MessageUpdated) => void;
  "message:deleted": (deletion: MessageDeleted) => void;
  /** A refused `message` sent without an ack callback. */
  "message:error": (error: ErrorBody) => void;
  /** A refused `typing` sent without an ack callback. */
  "typing:error": (error: ErrorBody) => void;
  typing: (event: { channelId: number; userId: number }) => void;
  /** A user's first socket connected, or their last one closed. */
  presence: (event: { userId: number; status: "online" | "offline" }) => void;
  /** The caller's read marker moved (from any of their sockets or REST). */
  "channel:read": (marker: { channelId: number; lastReadId: number }) => void;
}

/** Between instances through the Redis adapter (api.md §9); a server never receives its own. */
export interface InterServerEvents {
  /** Drop cached access state: these sessions ended, or this user's access changed. */
  revoked: (change: { sessionIds?: string[]; userId?: number }) => void;
  /** A membership change, for sockets still handshaking on another instance. */
  membership: (change: { userId: number; channelId: number; member: boolean }) => void;
}

export interface SocketData {
  user: AuthUser;
  /** Channels the user belonged to at connection; rooms follow membership changes after that. */
  channelIds: number[];
}
