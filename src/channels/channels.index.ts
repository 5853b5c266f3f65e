import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../lib/app-env.ts";
import { createRouter } from "../lib/create-router.ts";
import { setNextLink } from "../lib/paging.ts";
import { jsonOnce } from "../lib/responses.ts";
import type { MessagesService } from "../messages/messages.service.ts";
import * as routes from "./channels.routes.ts";
import type { ChannelsService } from "./channels.service.ts";

export function channelsRouter(deps: {
  channels: ChannelsService;
  messages: MessagesService;
  requireAuth: MiddlewareHandler<AppEnv>;
  onRead: (userId: number, channelId: number, lastReadId: number) => void;
}) {
  const { channels, messages, requireAuth, onRead } = deps;
  const router = createRouter();
  router.use("/api/channels", requireAuth);
  router.use("/api/channels/*", requireAuth);
  router.use("/api/direct/*", requireAuth);
  return router
    .openapi(routes.list, async (c) => c.json(await channels.listFor(c.get("user")), 200))
    // Two segments, where every `{id}` route has three: `public` is never read as an id, and
    // `/api/channels/public/join` and the like are a bad id (400), never the directory.
    .openapi(routes.directory, async (c) => {
      const query = c.req.valid("query");
      const page = await channels.listPublic(c.get("user"), query);
      setNextLink(c, "/api/channels/public", page.nextAfter, query.limit);
      return c.json(page.items, 200);
    })
    .openapi(routes.create, async (c) => c.json(await channels.create(c.get("user"), c.req.valid("json")), 201))
    .openapi(routes.join, async (c) => c.json(await channels.join(c.get("user"), c.req.valid("param").id), 200))
    .openapi(routes.leave, async (c) => {
      await channels.leave(c.get("user"), c.req.valid("param").id);
      return c.body(null, 204);
    })
    .openapi(routes.invite, async (c) => c.json(await channels.invite(c.get("user"), c.req.valid("param").id, c.req.valid("json").userId), 200))
    .openapi(routes.members, async (c) => {
      const { id } = c.req.valid("param");
      const query = c.req.valid("query");
      const page = await channels.members(c.get("user"), id, query);
      setNextLink(c, `/api/channels/${id}/members`, page.nextAfter, query.limit);
      return c.json(page.items, 200);
    })
    .openapi(routes.direct, async (c) => {
      const { channel, created } = await channels.direct(c.get("user"), c.req.valid("param").userId);
      return created ? c.json(channel, 201) : c.json(channel, 200);
    })
    .openapi(routes.history, async (c) => jsonOnce(c, await messages.history(c.get("user"), c.req.valid("param").id, c.req.valid("query")), 200))
    .openapi(routes.events, async (c) => c.json(await messages.events(c.get("user"), c.req.valid("param").id, c.req.valid("query")), 200))
    .openapi(routes.read, async (c) => {
      const user = c.get("user");
      const channelId = c.req.valid("param").id;
      onRead(user.id, channelId, await channels.markRead(user, channelId, c.req.valid("json").messageId));
      return c.body(null, 204);
    });
}
