import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { setNextLink } from "../lib/paging.ts";
import { jsonOnce } from "../lib/responses.ts";
import * as routes from "./users.routes.ts";
import type { UsersService } from "./users.service.ts";

export function usersRouter({ users, requireAuth }: { users: UsersService; requireAuth: MiddlewareHandler<AppEnv> }) {
  const router = createRouter();
  router.use("/api/users", requireAuth);
  router.use("/api/users/*", requireAuth);
  // Who may change whom is decided in the service (lib/policy.ts), where the target is known.
  return router
    .openapi(routes.me, async (c) => c.json(await users.get(c.get("user").id), 200))
    .openapi(routes.list, async (c) => {
      const { limit, after } = c.req.valid("query");
      const page = await users.list({ limit, after });
      setNextLink(c, "/api/users", page.nextAfter, limit);
      return jsonOnce(c, page.items, 200);
    })
    .openapi(routes.setRole, async (c) => {
      const { id } = c.req.valid("param");
      return c.json(await users.setRole(c.get("user"), id, c.req.valid("json").role, c.get("clientIp")()), 200);
    })
    .openapi(routes.ban, async (c) => {
      const { id } = c.req.valid("param");
      const body = c.req.valid("json") as { reason?: string } | undefined;
      return c.json(await users.ban(c.get("user"), id, body?.reason, c.get("clientIp")()), 200);
    })
    .openapi(routes.unban, async (c) => c.json(await users.unban(c.get("user"), c.req.valid("param").id, c.get("clientIp")()), 200));
}
