import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import * as routes from "./messages.routes.ts";
import type { MessagesService } from "./messages.service.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";

export function messagesRouter({ messages, requireAuth }: { messages: MessagesService; requireAuth: MiddlewareHandler<AppEnv> }) {
  const router = createRouter();
  router.use("/api/messages", requireAuth);
  return router
    .openapi(routes.history, async (c) => c.json(await messages.history(c.get("user"), GENERAL_CHANNEL_ID, c.req.valid("query")), 200))
    .openapi(routes.send, async (c) => c.json(await messages.send(c.get("user"), c.req.valid("json")), 201));
}
