import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import * as routes from "./auth.routes.ts";
import type { AuthService } from "./auth.service.ts";

export function authRouter(deps: { auth: AuthService; requireAuth: MiddlewareHandler<AppEnv>; limitAuthPerIp: MiddlewareHandler<AppEnv> }) {
  const { auth, requireAuth, limitAuthPerIp } = deps;
  const router = createRouter();
  router.use("/api/auth/register", limitAuthPerIp);
  router.use("/api/auth/login", limitAuthPerIp);
  router.use("/api/auth/logout-all", requireAuth);
  router.use("/api/auth/password", requireAuth);
  return router
    .openapi(routes.register, async (c) => c.json(await auth.register(c.req.valid("json"), c.get("clientIp")()), 201))
    .openapi(routes.login, async (c) => c.json(await auth.login(c.req.valid("json"), c.get("clientIp")()), 200))
    .openapi(routes.refresh, async (c) => c.json(await auth.refresh(c.req.valid("json").refreshToken, c.get("clientIp")()), 200))
    .openapi(routes.logout, async (c) => {
      await auth.logout(c.req.valid("json").refreshToken, c.get("clientIp")());
      return c.body(null, 204);
    })
    .openapi(routes.logoutAll, async (c) => {
      await auth.logoutAll(c.get("user"), c.get("clientIp")());
      return c.body(null, 204);
    })
    .openapi(routes.changePassword, async (c) => {
      await auth.changePassword(c.get("user"), c.req.valid("json"), c.get("clientIp")());
      return c.body(null, 204);
    });
}
