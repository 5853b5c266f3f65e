import type { RedisClient } from "../lib/redis.ts";

/**
 * Who is online, counted per user rather than per socket (api.md §8): a user is online from
 * their first socket's connection until their last one closes, however many tabs they have.
 * In this process for one instance; in one Redis hash for several (api.md §9), where the
 * atomic HINCRBY makes exactly one instance see a user's first socket and their last.
 */
export interface Presence {
  /** Counts a socket in; true when it is the user's first (they just came online). */
  connected(userId: number): Promise<boolean>;
  /** Counts a socket out; true when it was the user's last (they just went offline). */
  disconnected(userId: number): Promise<boolean>;
  /** The ids of online users, ascending. */
  online(): Promise<number[]>;
}

export function createPresence(redis?: RedisClient): Presence {
  return redis ? redisPresence(redis) : memoryPresence();
}

function memoryPresence(): Presence {
  const sockets = new Map<number, number>();
  return {
    async connected(userId) {
      const count = (sockets.get(userId) ?? 0) + 1;
      sockets.set(userId, count);
      return count === 1;
    },
    async disconnected(userId) {
      const count = (sockets.get(userId) ?? 0) - 1;
      if (count > 0) sockets.set(userId, count);
      else sockets.delete(userId);
      return count <= 0;
    },
    async online() {
      return ascending([...sockets.keys()]);
    },
  };
}

const key = "presence:sockets";

function redisPresence(redis: RedisClient): Presence {
  return {
    async connected(userId) {
      return (await redis.hincrby(key, String(userId), 1)) === 1;
    },
    async disconnected(userId) {
      const count = await redis.hincrby(key, String(userId), -1);
      // Drop the field once nobody is left, but only if no socket came in meanwhile.
      if (count <= 0) await redis.eval("if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end", 1, key, String(userId));
      return count <= 0;
    },
    async online() {
      const counts = await redis.hgetall(key);
      return ascending(Object.entries(counts).filter(([, n]) => Number(n) > 0).map(([id]) => Number(id)));
    },
  };
}

const ascending = (ids: number[]) => ids.sort((a, b) => a - b);
