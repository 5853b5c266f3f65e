import { createMiddleware } from "hono/factory";
import { AppError } from "../lib/errors.ts";

const json = /^application\/([\w.-]+\+)?json\s*(;|$)/i;

/**
 * A body sent with another content type would otherwise reach the validators as "no
 * body" and come back as a confusing list of missing fields; say what is wrong instead.
 */
export const requireJsonBody = createMiddleware(async (c, next) => {
  const hasBody = c.req.header("content-length") !== undefined ? c.req.header("content-length") !== "0" : c.req.header("transfer-encoding") !== undefined;
  if (hasBody && !json.test(c.req.header("content-type") ?? "")) {
    throw new AppError("BAD_JSON", "The body must be JSON, sent with Content-Type: application/json");
  }
  await next();
});
