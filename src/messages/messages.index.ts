import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { jsonOnce } from "../lib/responses.ts";
import * as routes from "./messages.routes.ts";
import type { MessageSearch } from "./messages.search.ts";
import type { MessagesService } from "./messages.service.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";

export function messagesRouter(deps: { messages: MessagesService; search: MessageSearch; requireAuth: MiddlewareHandler<AppEnv> }) {
  const { messages, search, requireAuth } = deps;
  const router = createRouter();
  router.use("/api/messages", requireAuth);
  router.use("/api/messages/*", requireAuth);
  return (
    router
      // Before `/api/messages/{id}`, so "search" is never taken for an id.
      .openapi(routes.search, async (c) => c.json(await search.search(c.get("user"), c.req.valid("query")), 200))
      .openapi(routes.history, async (c) => jsonOnce(c, await messages.history(c.get("user"), GENERAL_CHANNEL_ID, c.req.valid("query")), 200))
      .openapi(routes.send, async (c) => c.json(await messages.send(c.get("user"), c.req.valid("json")), 201))
      .openapi(routes.edit, async (c) => c.json(await messages.edit(c.get("user"), c.req.valid("param").id, c.req.valid("json").content), 200))
      .openapi(routes.remove, async (c) => {
        await messages.remove(c.get("user"), c.req.valid("param").id, c.get("clientIp"));
        return c.body(null, 204);
      })
  );
}
