import { createRoute } from "@hono/zod-openapi";
import { channelIdParamsSchema } from "../channels/channels.schemas.ts";
import { errorResponse, jsonContent, protectedResponses, validationResponses } from "../lib/responses.ts";
import { summaryQuerySchema, summarySchema } from "./summaries.schemas.ts";

export const summary = createRoute({
  security: [{ bearerAuth: [] }],
  tags: ["channels"],
  method: "get",
  path: "/api/channels/{id}/summary",
  summary: "A model-written summary of a channel's newest messages (`last`) or those since a time (`since`), members only",
  request: { params: channelIdParamsSchema, query: summaryQuerySchema },
  responses: {
    200: jsonContent(summarySchema, "The summary (cached per range until a message in it is edited or deleted); `messageCount` 0 and no model call for an empty range"),
    ...validationResponses,
    ...protectedResponses,
    403: errorResponse("FORBIDDEN: a public channel the caller has not joined"),
    404: errorResponse("NOT_FOUND: no such channel (or a private one the caller is not in)"),
    429: errorResponse("RATE_LIMITED (RATE_LIMIT_SUMMARIES per user), with Retry-After"),
    503: errorResponse("LLM_DISABLED: no model server is configured; UNAVAILABLE: the model (or the database) did not answer"),
  },
});
