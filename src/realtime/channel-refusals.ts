import { AppError } from "../lib/errors.ts";

/** How long a socket remembers that a channel it is not in refused it, and how many such channels. */
const refusalTtlMs = 5_000;
const refusalsKept = 32;

/**
 * The refusals (NOT_FOUND, FORBIDDEN) of channels one socket is not in, remembered briefly, so
 * that a client sending to a channel it cannot use costs one query, not one per event; events
 * arriving while that query runs wait for its answer. A member's answer is not kept: its socket
 * is about to be in the channel's room, which settles it without a query. At most
 * `refusalsKept` channels, the oldest dropped first; the socket's own, so it goes with it.
 */
export function channelRefusals() {
  const known = new Map<number, { answer: Promise<unknown>; until: number }>();
  return (channelId: number, ask: () => Promise<unknown>): Promise<unknown> => {
    const hit = known.get(channelId);
    if (hit && hit.until > Date.now()) return hit.answer;
    const entry = { answer: ask(), until: Infinity };
    known.delete(channelId);
    if (known.size >= refusalsKept) known.delete(known.keys().next().value!);
    known.set(channelId, entry);
    entry.answer.then(
      () => known.get(channelId) === entry && known.delete(channelId),
      (error: unknown) => {
        const refusal = error instanceof AppError && (error.code === "NOT_FOUND" || error.code === "FORBIDDEN");
        if (refusal) entry.until = Date.now() + refusalTtlMs;
        else if (known.get(channelId) === entry) known.delete(channelId);
      },
    );
    return entry.answer;
  };
}
