import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { requirePermission } from "../middleware/require-permission.ts";
import * as routes from "./moderation.routes.ts";
import type { ModerationService } from "./moderation.service.ts";

export function moderationRouter({ moderation, requireAuth }: { moderation: ModerationService; requireAuth: MiddlewareHandler<AppEnv> }) {
  const router = createRouter();
  router.use("/api/admin/flags", requireAuth, requirePermission("moderation.flags"));
  return router.openapi(routes.listFlags, async (c) => c.json(await moderation.listFlags(c.req.valid("query")), 200));
}
