import type { Db } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { createRouter } from "../lib/create-router.ts";
import * as routes from "./health.routes.ts";

const readinessTimeoutMs = 2_000;

export function healthRouter({ db }: { db: Db }) {
  return createRouter()
    .openapi(routes.healthz, (c) => c.json({ status: "ok" as const }, 200))
    .openapi(routes.readyz, async (c) => {
      await pingDatabase(db);
      return c.json({ status: "ok" as const }, 200);
    });
}

/** `SELECT 1` within a deadline; a hung connection counts as down. */
async function pingDatabase(db: Db): Promise<void> {
  let timer: Timer | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("timeout")), readinessTimeoutMs);
  });
  try {
    await Promise.race([db.$queryRaw`SELECT 1`, deadline]);
  } catch {
    throw new AppError("UNAVAILABLE", "The database is not answering");
  } finally {
    clearTimeout(timer);
  }
}
