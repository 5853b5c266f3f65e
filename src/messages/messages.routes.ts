import { createRoute, z } from "@hono/zod-openapi";
import { errorResponse, jsonBody, jsonContent, protectedResponses, validationResponses } from "../lib/responses.ts";
import { historyQuerySchema, messageInputSchema, messageSchema } from "./messages.schemas.ts";

export const history = createRoute({
  method: "get",
  path: "/api/messages",
  tags: ["messages"],
  summary: "Message history with before/after cursors",
  security: [{ bearerAuth: [] }],
  request: { query: historyQuerySchema },
  responses: {
    200: jsonContent(z.array(messageSchema), "Newest first, or oldest first with `after`"),
    ...validationResponses,
    ...protectedResponses,
  },
});

export const send = createRoute({
  method: "post",
  path: "/api/messages",
  tags: ["messages"],
  summary: "Send a message (the REST twin of the socket `message` event)",
  security: [{ bearerAuth: [] }],
  request: { body: jsonBody(messageInputSchema) },
  responses: {
    201: jsonContent(messageSchema, "Stored, committed and broadcast (or, for a repeated clientId, the first message)"),
    ...validationResponses,
    ...protectedResponses,
    403: errorResponse("FORBIDDEN: userId is not the token's user"),
    413: errorResponse("PAYLOAD_TOO_LARGE"),
  },
});
