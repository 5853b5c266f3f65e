import type { Db } from "../lib/db.ts";
import type { RedisClient } from "../lib/redis.ts";
import { AppError } from "../lib/errors.ts";
import { createRouter } from "../lib/create-router.ts";
import * as routes from "./health.routes.ts";

const readinessTimeoutMs = 2_000;

export function healthRouter({ db, redis }: { db: Db; redis?: RedisClient }) {
  return createRouter()
    .openapi(routes.healthz, (c) => c.json({ status: "ok" as const }, 200))
    .openapi(routes.readyz, async (c) => {
      await Promise.all([pingDatabase(db), redis ? pingRedis(redis) : undefined]);
      return c.json({ status: "ok" as const }, 200);
    });
}

/** `SELECT 1` within a deadline; a hung connection counts as down. */
async function pingDatabase(db: Db): Promise<void> {
  await withinDeadline(db.$queryRaw`SELECT 1`, "The database is not answering");
}

/** With REDIS_URL, Redis is a dependency too: an instance cut off from it would miss the others' events. */
async function pingRedis(redis: RedisClient): Promise<void> {
  await withinDeadline(redis.ping(), "Redis is not answering");
}

async function withinDeadline(probe: Promise<unknown>, failure: string): Promise<void> {
  let timer: Timer | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("timeout")), readinessTimeoutMs);
  });
  try {
    await Promise.race([probe, deadline]);
  } catch {
    throw new AppError("UNAVAILABLE", failure);
  } finally {
    clearTimeout(timer);
  }
}
