import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, RateLimiterUnion, type RateLimiterAbstract } from "rate-limiter-flexible";
import type { RedisClient } from "./redis.ts";
import type { RateLimitSetting } from "../config.ts";
import { rateLimited } from "./errors.ts";

/** Anything that can take a point for a key, rejecting with a RateLimiterRes when out. */
export interface Limiter {
  consume(key: string): Promise<unknown>;
}

/** Makes a named limit, or nothing when its setting is "off". */
export type LimiterFactory = (keyPrefix: string, setting: RateLimitSetting) => RateLimiterAbstract | undefined;

/**
 * Every limiter is made by this factory: in memory for one instance, or in Redis, so that
 * several instances share every budget (api.md §9). While Redis is away (not connected, or a
 * command failing or timing out) a Redis limiter counts in this instance's memory instead
 * (rate-limiter-flexible's insurance limiter, same limits): limits still apply, per instance.
 */
export function limiterFactory(redis?: RedisClient): LimiterFactory {
  return (keyPrefix, setting) => {
    if (!setting) return undefined;
    const options = { keyPrefix: `rl:${keyPrefix}`, points: setting.points, duration: setting.durationSeconds };
    if (!redis) return new RateLimiterMemory(options);
    // rejectIfRedisNotReady: straight to the insurance while the client is not connected.
    return new RateLimiterRedis({ ...options, storeClient: redis, rejectIfRedisNotReady: true, insuranceLimiter: new RateLimiterMemory(options) });
  };
}

/** Takes one point for `key`; throws RATE_LIMITED with the wait when there is none left. */
export async function consumeOrThrow(limiter: Limiter | undefined, key: string, message: string): Promise<void> {
  if (!limiter) return;
  try {
    await limiter.consume(key);
  } catch (error) {
    if (error instanceof RateLimiterRes) throw rateLimited(message, error.msBeforeNext);
    throw error;
  }
}

/** Several limits at once (burst and sustained): a point is taken from each; any one can refuse. */
export function allOf(...limiters: (RateLimiterAbstract | undefined)[]): Limiter | undefined {
  const active = limiters.filter((l): l is RateLimiterAbstract => l !== undefined);
  if (active.length === 0) return undefined;
  if (active.length === 1) return active[0];
  const union = new RateLimiterUnion(...active);
  return {
    async consume(key) {
      try {
        return await union.consume(key);
      } catch (rejected) {
        // RateLimiterUnion rejects with { keyPrefix: RateLimiterRes } for the limits that refused.
        if (rejected instanceof Error) throw rejected;
        const waits = Object.values(rejected as Record<string, RateLimiterRes>).map((r) => r.msBeforeNext);
        throw new RateLimiterRes(0, Math.max(...waits));
      }
    },
  };
}

/** Takes one point for `key` if there is one: false when the limit is spent (for quiet throttles). */
export async function tryConsume(limiter: Limiter | undefined, key: string): Promise<boolean> {
  if (!limiter) return true;
  try {
    await limiter.consume(key);
    return true;
  } catch (error) {
    if (error instanceof RateLimiterRes) return false;
    throw error;
  }
}
