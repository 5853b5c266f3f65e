import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { jsonOnce } from "../lib/responses.ts";
import * as routes from "./messages.routes.ts";
import type { MessageSearch } from "./messages.search.ts";
import type { SearchQuery } from "./messages.schemas.ts";
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
      .openapi(routes.search, async (c) => {
        const query = c.req.valid("query");
        const { hits, nextBefore } = await search.search(c.get("user"), query);
        // The next window of candidates (api.md §8): the same search, older than the oldest one ranked.
        if (nextBefore !== undefined) c.header("Link", `<${nextSearchPage(query, nextBefore)}>; rel="next"`);
        return c.json(hits, 200);
      })
      .openapi(routes.history, async (c) => jsonOnce(c, await messages.history(c.get("user"), GENERAL_CHANNEL_ID, c.req.valid("query")), 200))
      .openapi(routes.send, async (c) => c.json(await messages.send(c.get("user"), c.req.valid("json")), 201))
      .openapi(routes.edit, async (c) => c.json(await messages.edit(c.get("user"), c.req.valid("param").id, c.req.valid("json").content), 200))
      .openapi(routes.remove, async (c) => {
        await messages.remove(c.get("user"), c.req.valid("param").id, c.get("clientIp")());
        return c.body(null, 204);
      })
  );
}

/** The same search's next window: everything as asked, with `before` moved to the oldest candidate. */
function nextSearchPage({ q, channelId, limit }: SearchQuery, before: number): string {
  const params = new URLSearchParams({ q, ...(channelId !== undefined ? { channelId: String(channelId) } : {}), before: String(before), limit: String(limit) });
  return `/api/messages/search?${params}`;
}
