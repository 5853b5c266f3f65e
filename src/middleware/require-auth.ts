import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../lib/app-env.ts";
import { AppError } from "../lib/errors.ts";
import type { Authenticator } from "../sessions/authenticator.ts";

const bearer = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$/i;

/** Accepts `Authorization: Bearer <jwt>` of a live session and puts the caller on `c.var.user`. */
export function requireAuth(authenticator: Authenticator) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const match = bearer.exec(c.req.header("authorization")?.trim() ?? "");
    if (!match?.[1]) throw new AppError("UNAUTHORIZED", "Missing or malformed bearer token");
    c.set("user", await authenticator.authenticate(match[1]));
    await next();
  });
}
