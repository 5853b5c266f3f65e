import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { AppEnv } from "../lib/app-env.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../metrics/metrics.ts";

/**
 * Once a request is answered (api.md §9): one JSON log line with method, the route pattern (not
 * the raw path, so ids and junk URLs do not explode cardinality), status, duration, request id
 * and user id; and the same figures into the request metrics. Headers, bodies and query
 * strings are never logged, so no token or password can end up in a line.
 */
export function observeRequests(logger: Logger, metrics: Metrics): MiddlewareHandler<AppEnv> {
  // These lines carry only the fixed fields below, so the logger's redaction (a third of a
  // line's cost) has nothing to find in them and is skipped.
  const requestLog = logger.child({}, { redact: [] });
  return async (c, next) => {
    const started = performance.now();
    await next();
    const seconds = (performance.now() - started) / 1000;
    const route = routePath(c, -1);
    metrics.request(c.req.method, route, c.res.status, seconds);
    requestLog.info(
      {
        requestId: c.get("requestId"),
        method: c.req.method,
        route,
        status: c.res.status,
        durationMs: Math.round(seconds * 100_000) / 100,
        userId: c.get("user")?.id ?? null,
      },
      "request",
    );
  };
}
