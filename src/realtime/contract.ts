import type { AuthUser } from "../lib/tokens.ts";
import type { LoggedEvent } from "../messages/channel-log.ts";
import type { ClientEventAck, ServerEventName, ServerEventPayload } from "./events.ts";

/**
 * Events a client emits (see events.ts). Payloads are `unknown` on purpose: they are
 * validated, not trusted. The ack is always the last argument, if any.
 */
export interface ClientToServerEvents {
  message: (payload: unknown, ack?: (result: ClientEventAck<"message">) => void) => void;
  typing: (payload: unknown, ack?: (result: ClientEventAck<"typing">) => void) => void;
}

/** Events the server emits, typed from their schemas in events.ts. */
export type ServerToClientEvents = { [E in ServerEventName]: (payload: ServerEventPayload<E>) => void };

/** Between instances through the Redis adapter (api.md §9); a server never receives its own. */
export interface InterServerEvents {
  /** Drop cached access state: these sessions ended, or this user's access changed. */
  revoked: (change: { sessionIds?: string[]; userId?: number }) => void;
  /** A membership change, for sockets still handshaking on another instance. */
  membership: (change: { userId: number; channelId: number; member: boolean }) => void;
  /** An event another instance committed, for this one's sockets (messages/fanout.ts). */
  "channel:event": (event: LoggedEvent) => void;
}

export interface SocketData {
  user: AuthUser;
  /** Channels the user belonged to at connection; rooms follow membership changes after that. */
  channelIds: number[];
  /** `auth.since` as validated at the handshake (api.md §11): channel id → the last seq the client has. */
  since?: Map<number, number>;
}
