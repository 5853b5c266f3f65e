import type { RedisClient } from "../lib/redis.ts";

/**
 * Keeps a channel's messages in id order across instances (api.md §8 with §9).
 *
 * One instance writes a channel at a time (the advisory lock) and publishes right after its
 * commit, but the lock ends at the commit: the next writer, on another instance, could commit
 * and publish before the first one's publish reached Redis. So each message waits until the
 * message before it in its channel has been published, which every instance records in Redis
 * right after its publish (on the same connection, so after the broadcast itself). Published
 * means in the shared stream, not yet read by this instance: so it also waits until this
 * instance has delivered that message to its own sockets (`deliveredUpTo`), or its clients could
 * get the next message first.
 *
 * On one instance the in-process queue per channel already gives this order: no gate.
 */
export interface PublishGate {
  /** False on one instance: nothing ever waits, so writers need not look up previous ids. */
  readonly active: boolean;
  /** Resolves once the channel's message `previousId` has been published (or after a bounded wait). */
  before(channelId: number, previousId: number): Promise<void>;
  /** Records that message `id` of the channel has been published. */
  published(channelId: number, id: number): Promise<void>;
}

/** How long a message waits for its predecessor's publish: a writer that died after its commit must not stall the channel. */
const MAX_WAIT_MS = 2_000;
/**
 * How long it then waits for this instance to read that predecessor from the stream (normally a
 * millisecond or two). Bounded apart, and without a warning: a broadcast lost in a Redis outage
 * never arrives, and the first message after it need not wait the whole MAX_WAIT_MS.
 */
const MAX_READ_WAIT_MS = 1_000;

const recordScript = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end`;

/** Markers kept for recording once Redis is back, at most (the least recently updated channel is forgotten first). */
const MAX_UNRECORDED = 10_000;

export function createPublishGate(
  redis?: RedisClient,
  onStall?: (channelId: number, previousId: number) => void,
  /** The newest message of the channel this instance has delivered (realtime/deliveries.ts). */
  deliveredUpTo?: (channelId: number) => number,
): PublishGate {
  if (!redis) return { active: false, before: async () => {}, published: async () => {} };
  const key = (channelId: number) => `published:channel:${channelId}`;
  // Markers Redis missed (it was away), per channel: recorded once it is back, so that the next
  // message of those channels, on any instance, need not wait out MAX_WAIT_MS for them.
  const unrecorded = new Map<number, number>();
  const record = (channelId: number, id: number) =>
    redis.eval(recordScript, 1, key(channelId), String(id)).then(
      () => void ((unrecorded.get(channelId) ?? 0) <= id && unrecorded.delete(channelId)),
      () => void keepUnrecorded(unrecorded, channelId, id),
    );
  redis.on("ready", () => {
    for (const [channelId, id] of [...unrecorded]) void record(channelId, id);
  });
  return {
    active: true,
    // Never fails a send: the message is committed by now, so a Redis hiccup costs order, not the ack.
    async before(channelId, previousId) {
      if (previousId === 0) return;
      const deadline = Date.now() + MAX_WAIT_MS;
      for (;;) {
        let marker: string | null;
        try {
          marker = await redis.get(key(channelId));
        } catch {
          // Redis away: nothing crosses instances meanwhile, so there is no order to keep. A failure
          // while connected (a timeout under load) is tried again, within the deadline.
          if (redis.status !== "ready") return;
          marker = "0";
        }
        // No marker: nothing published in this channel since Redis started, so nothing to wait for.
        if (marker === null) return;
        if (Number(marker) >= previousId) return readHere(channelId, previousId);
        if (Date.now() > deadline) return onStall?.(channelId, previousId);
        await Bun.sleep(1);
      }
    },
    async published(channelId, id) {
      await record(channelId, id);
    },
  };

  /** Resolves once this instance has delivered message `previousId` of the channel, or after MAX_READ_WAIT_MS. */
  async function readHere(channelId: number, previousId: number): Promise<void> {
    if (!deliveredUpTo) return;
    const deadline = Date.now() + MAX_READ_WAIT_MS;
    while (deliveredUpTo(channelId) < previousId && Date.now() < deadline && redis?.status === "ready") await Bun.sleep(1);
  }
}

function keepUnrecorded(ids: Map<number, number>, channelId: number, id: number): void {
  const newest = Math.max(id, ids.get(channelId) ?? 0);
  ids.delete(channelId); // re-inserted last
  ids.set(channelId, newest);
  if (ids.size > MAX_UNRECORDED) ids.delete(ids.keys().next().value!);
}
