import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import * as routes from "./presence.routes.ts";
import type { PresenceAnnouncer } from "./presence.socket.ts";

export function presenceRouter({ presence, requireAuth }: { presence: Pick<PresenceAnnouncer, "online">; requireAuth: MiddlewareHandler<AppEnv> }) {
  const router = createRouter();
  router.use("/api/presence", requireAuth);
  return router.openapi(routes.online, async (c) => c.json(await presence.online(), 200));
}
