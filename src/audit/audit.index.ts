import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { requirePermission } from "../middleware/require-permission.ts";
import * as routes from "./audit.routes.ts";
import type { AuditService } from "./audit.service.ts";

export function auditRouter({ audit, requireAuth }: { audit: AuditService; requireAuth: MiddlewareHandler<AppEnv> }) {
  const router = createRouter();
  // This route only: other /api/admin routes have their own permissions (the flags are for moderators too).
  router.use("/api/admin/audit", requireAuth, requirePermission("audit.read"));
  return router.openapi(routes.list, async (c) => c.json(await audit.list(c.req.valid("query")), 200));
}
