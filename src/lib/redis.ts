import { Redis } from "ioredis";

export type RedisClient = Redis;

/**
 * The one Redis connection of an instance (api.md §9), shared by the Socket.IO adapter, the rate
 * limiters and presence. Commands issued while Redis is away are queued and retried rather than
 * failing at once; a request that still cannot be served surfaces as UNAVAILABLE.
 */
export function createRedis(url: string, keyPrefix: string): RedisClient {
  return new Redis(url, { maxRetriesPerRequest: 3, connectionName: "chat-backend", keyPrefix });
}
