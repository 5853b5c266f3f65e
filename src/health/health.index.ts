import type { Db } from "../lib/db.ts";
import type { RedisHealth } from "../lib/redis.ts";
import { AppError } from "../lib/errors.ts";
import { createRouter } from "../lib/create-router.ts";
import * as routes from "./health.routes.ts";

const readinessTimeoutMs = 2_000;

/**
 * Readiness follows the database only: without it nothing can be served. Redis being away
 * (with REDIS_URL) leaves the instance able to serve its own clients, so it is reported as
 * `degraded` but still ready: failing readiness on every instance at once whenever the one
 * shared Redis blips would take the whole service out of its load balancer.
 */
export function healthRouter({ db, redis }: { db: Db; redis?: RedisHealth }) {
  return createRouter()
    .openapi(routes.healthz, (c) => c.json({ status: "ok" as const }, 200))
    .openapi(routes.readyz, async (c) => {
      const [, redisUp] = await Promise.all([pingDatabase(db), redis ? pingRedis(redis) : undefined]);
      if (redisUp === undefined) return c.json({ status: "ok" as const, checks: { database: "ok" as const } }, 200);
      const status = redisUp ? ("ok" as const) : ("degraded" as const);
      return c.json({ status, checks: { database: "ok" as const, redis: redisUp ? ("ok" as const) : ("unavailable" as const) } }, 200);
    });
}

/** `SELECT 1` within a deadline; a hung connection counts as down. */
async function pingDatabase(db: Db): Promise<void> {
  if ((await withinDeadline(db.$queryRaw`SELECT 1`)) === false) throw new AppError("UNAVAILABLE", "The database is not answering");
}

/** A PING within the deadline (the Redis client's own command timeout is shorter). */
async function pingRedis(redis: RedisHealth): Promise<boolean> {
  return (await withinDeadline(redis.check())) === true;
}

/** The probe's value, or false when it failed or did not settle in time. */
async function withinDeadline<T>(probe: Promise<T>): Promise<T | false> {
  let timer: Timer | undefined;
  const deadline = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), readinessTimeoutMs);
  });
  try {
    return await Promise.race([probe, deadline]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
