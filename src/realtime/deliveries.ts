import { LRUCache } from "lru-cache";
import { MessageType, type ClusterMessage } from "socket.io-adapter";
import type { ChatMessage } from "../messages/messages.schemas.ts";
import type { ChatServer } from "./realtime.ts";

/**
 * Per channel, the newest message this instance has delivered to its sockets: its own, as it
 * publishes them, and other instances', as its Redis adapter reads them from the shared stream.
 *
 * The publish gate (messages/publish-gate.ts) waits for it: that the previous message of a channel
 * was published by another instance means it is in the stream, not that this instance has read it
 * yet; a message published here before that would reach this instance's clients first.
 */
export interface Deliveries {
  /** The newest message id of the channel delivered here (0 when none is known). */
  upTo(channelId: number): number;
  /** Records a message this instance has just broadcast. */
  delivered(message: Pick<ChatMessage, "id" | "channelId">): void;
}

/** Channels remembered (the least recently delivered to is forgotten first; it then reads as 0). */
const MAX_CHANNELS = 100_000;

export function trackDeliveries(io: ChatServer): Deliveries {
  const newest = new LRUCache<number, number>({ max: MAX_CHANNELS });
  const delivered = ({ id, channelId }: Pick<ChatMessage, "id" | "channelId">) => {
    if (id > (newest.get(channelId) ?? 0)) newest.set(channelId, id);
  };

  // Another instance's broadcast: the cluster adapter delivers it to this instance's sockets in
  // `onMessage` (synchronously), called on the adapter instance for each message it reads.
  const adapter = io.of("/").adapter as unknown as { onMessage?: (message: ClusterMessage, offset?: string) => unknown };
  const onMessage = adapter.onMessage?.bind(adapter);
  if (onMessage) {
    adapter.onMessage = (message, offset) => {
      const result = onMessage(message, offset);
      if (message.type === MessageType.BROADCAST) {
        const [event, payload] = ((message.data as { packet?: { data?: unknown[] } }).packet?.data ?? []) as [unknown, Partial<ChatMessage>?];
        if (event === "message" && typeof payload?.id === "number" && typeof payload.channelId === "number") delivered(payload as ChatMessage);
      }
      return result;
    };
  }

  return { upTo: (channelId) => newest.get(channelId) ?? 0, delivered };
}
