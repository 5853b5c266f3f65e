import { AppError } from "../lib/errors.ts";

/** How long a socket remembers that a channel it is not in refused it, and how many such channels. */
const refusalTtlMs = 5_000;
const refusalsKept = 32;

/**
 * The refusals (NOT_FOUND, FORBIDDEN) of channels one socket is not in, remembered briefly, so
 * that a client sending to a channel it cannot use costs one query, not one per event; events
 * arriving while that query runs wait for its answer. A member's answer is not kept: its socket
 * is about to be in the channel's room, which settles it without a query. At most
 * `refusalsKept` channels per socket, the oldest dropped first; kept by socket, so they go with it.
 */
export function channelRefusals() {
  // A socket's map is made on first use: most sockets never send to a channel they are not in.
  const bySocket = new WeakMap<object, Map<number, { answer: Promise<unknown>; until: number }>>();
  return (socket: object, channelId: number, ask: () => Promise<unknown>): Promise<unknown> => {
    let cache = bySocket.get(socket);
    if (!cache) bySocket.set(socket, (cache = new Map()));
    const hit = cache.get(channelId);
    if (hit && hit.until > Date.now()) return hit.answer;
    const entry = { answer: ask(), until: Infinity };
    cache.delete(channelId);
    if (cache.size >= refusalsKept) cache.delete(cache.keys().next().value!);
    cache.set(channelId, entry);
    entry.answer.then(
      () => cache.get(channelId) === entry && cache.delete(channelId),
      (error: unknown) => {
        const refusal = error instanceof AppError && (error.code === "NOT_FOUND" || error.code === "FORBIDDEN");
        if (refusal) entry.until = Date.now() + refusalTtlMs;
        else if (cache.get(channelId) === entry) cache.delete(channelId);
      },
    );
    return entry.answer;
  };
}
