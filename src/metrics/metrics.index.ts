import { timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { AppError } from "../lib/errors.ts";
import * as routes from "./metrics.routes.ts";
import type { Metrics } from "./metrics.ts";

const sha256 = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest();

/** With METRICS_TOKEN set, `/metrics` wants `Authorization: Bearer <METRICS_TOKEN>` (compared in constant time). */
function requireMetricsToken(token: string | undefined): MiddlewareHandler<AppEnv> {
  const expected = token === undefined ? undefined : sha256(token);
  return async (c, next) => {
    if (expected) {
      const presented = /^Bearer (.+)$/.exec(c.req.header("authorization") ?? "")?.[1] ?? "";
      if (!timingSafeEqual(sha256(presented), expected)) throw new AppError("UNAUTHORIZED", "A valid metrics token is required");
    }
    await next();
  };
}

export function metricsRouter({ metrics, token }: { metrics: Metrics; token: string | undefined }) {
  const router = createRouter();
  router.use("/metrics", requireMetricsToken(token));
  return router.openapi(routes.scrape, async (c) => c.text(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType }));
}

/** Counts REST sends (POST /api/messages) as accepted or rejected with their error code, as sockets do. */
export function countRestMessages(metrics: Metrics): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    if (c.req.method !== "POST") return;
    if (c.res.status === 201) metrics.messageAccepted("rest");
    else metrics.messageRejected("rest", c.get("errorCode") ?? String(c.res.status));
  };
}
