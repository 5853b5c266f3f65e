import { RateLimiterMemory, RateLimiterRes, RateLimiterUnion, type RateLimiterAbstract } from "rate-limiter-flexible";
import type { RateLimitSetting } from "../config.ts";
import { rateLimited } from "./errors.ts";

/** Anything that can take a point for a key, rejecting with a RateLimiterRes when out. */
export interface Limiter {
  consume(key: string): Promise<unknown>;
}

/**
 * A named limit, or nothing when the setting is "off". Every limiter is made here, so
 * moving them to a shared store (Redis, for several instances) is a change in one place.
 */
export function createLimiter(keyPrefix: string, setting: RateLimitSetting): RateLimiterAbstract | undefined {
  if (!setting) return undefined;
  return new RateLimiterMemory({ keyPrefix, points: setting.points, duration: setting.durationSeconds });
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
