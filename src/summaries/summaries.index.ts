import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import * as routes from "./summaries.routes.ts";
import type { SummariesService } from "./summaries.service.ts";

/** api.md §10's summaries. Mounted before the channels router, whose `/api/channels/*` also asks for auth. */
export function summariesRouter(deps: { summaries: SummariesService; requireAuth: MiddlewareHandler<AppEnv> }) {
  const { summaries, requireAuth } = deps;
  const router = createRouter();
  router.use("/api/channels/:id/summary", requireAuth);
  return router.openapi(routes.summary, async (c) => c.json(await summaries.summary(c.get("user"), c.req.valid("param").id, c.req.valid("query")), 200));
}
