import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../lib/app-env.ts";
import { authorize, type Permission } from "../lib/policy.ts";

/** For routes whose permission does not depend on a target: checks the caller's current role. */
export function requirePermission(permission: Permission) {
  return createMiddleware<AppEnv>(async (c, next) => {
    authorize(c.get("user"), permission);
    await next();
  });
}
