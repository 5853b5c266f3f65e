import { createRoute, z } from "@hono/zod-openapi";
import { jsonContent, protectedResponses } from "../lib/responses.ts";

export const online = createRoute({
  method: "get",
  path: "/api/presence",
  tags: ["presence"],
  summary: "The ids of users with at least one connected socket",
  security: [{ bearerAuth: [] }],
  responses: {
    200: jsonContent(z.array(z.number().int()), "Online user ids, ascending; `presence` events keep a client's copy current"),
    ...protectedResponses,
  },
});
