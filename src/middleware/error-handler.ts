import type { ErrorHandler, NotFoundHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { logServerFault, toAppError } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";

/** The one place a failure becomes an HTTP response (api.md §0). */
export function errorHandler(logger: Logger): ErrorHandler<AppEnv> {
  return (error, c) => {
    const appError = toAppError(error);
    logServerFault(logger, appError, error, { requestId: c.get("requestId"), method: c.req.method, path: c.req.path });
    if (appError.retryAfter !== undefined) c.header("Retry-After", String(appError.retryAfter));
    // For middleware that reports outcomes by code (the message metrics).
    c.set("errorCode", appError.code);
    return c.json({ error: appError.toBody() }, appError.status);
  };
}

export const notFoundHandler: NotFoundHandler<AppEnv> = (c) =>
  c.json({ error: { code: "NOT_FOUND", message: `No route for ${c.req.method} ${c.req.path}` } }, 404);
