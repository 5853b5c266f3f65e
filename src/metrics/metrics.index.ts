import { timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import type { Config } from "../config.ts";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { AppError } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import * as routes from "./metrics.routes.ts";
import type { Metrics } from "./metrics.ts";

const sha256 = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest();

/**
 * Who may scrape `/metrics` (api.md §7): with METRICS_TOKEN, its bearers; without it, anyone in
 * development and nobody elsewhere. Per-route counts and process figures help an attacker map the
 * service, so a deployment that forgot the token gets no open endpoint, only a start-up warning.
 */
export type MetricsAccess = "token" | "open" | "off";

export function metricsAccess(config: Pick<Config, "METRICS_TOKEN" | "NODE_ENV">): MetricsAccess {
  if (config.METRICS_TOKEN !== undefined) return "token";
  return config.NODE_ENV === "development" ? "open" : "off";
}

/** Says at start-up how /metrics can be reached, so an operator who expects to scrape it knows why not. */
export function logMetricsAccess(logger: Logger, access: MetricsAccess): void {
  if (access === "off") logger.warn("GET /metrics is off: set METRICS_TOKEN to scrape it with Authorization: Bearer <METRICS_TOKEN>");
  else if (access === "open") logger.info("GET /metrics is open to anyone (development, no METRICS_TOKEN)");
}

/** Off: 404, as if there were no such route. Token: `Authorization: Bearer <METRICS_TOKEN>`, compared in constant time. */
function guardMetrics(access: MetricsAccess, token: string | undefined): MiddlewareHandler<AppEnv> {
  const expected = token === undefined ? undefined : sha256(token);
  return async (c, next) => {
    if (access === "off") throw new AppError("NOT_FOUND", "Metrics are off: the server has no METRICS_TOKEN");
    if (expected) {
      const presented = /^Bearer (.+)$/.exec(c.req.header("authorization") ?? "")?.[1] ?? "";
      if (!timingSafeEqual(sha256(presented), expected)) throw new AppError("UNAUTHORIZED", "A valid metrics token is required");
    }
    await next();
  };
}

export function metricsRouter({ metrics, config }: { metrics: Metrics; config: Pick<Config, "METRICS_TOKEN" | "NODE_ENV"> }) {
  const router = createRouter();
  router.use("/metrics", guardMetrics(metricsAccess(config), config.METRICS_TOKEN));
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
