import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { AppEnv } from "../lib/app-env.ts";
import type { Logger } from "../lib/logger.ts";

/**
 * One JSON line per request once it is answered (api.md §9): method, the route pattern (not the
 * raw path, so ids do not explode log cardinality), status, duration, request id, user id.
 * Headers, bodies and query strings are never logged, so no token or password can end up here.
 */
export function logRequests(logger: Logger): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now();
    await next();
    logger.info(
      {
        requestId: c.get("requestId"),
        method: c.req.method,
        route: routePath(c, -1),
        status: c.res.status,
        durationMs: Math.round((performance.now() - started) * 100) / 100,
        userId: c.get("user")?.id ?? null,
      },
      "request",
    );
  };
}
