import { createRoute, z } from "@hono/zod-openapi";
import { errorResponse, jsonBody, jsonContent, protectedResponses, validationResponses } from "../lib/responses.ts";
import {
  historyEntrySchema,
  historyQuerySchema,
  messageEditSchema,
  messageIdParamsSchema,
  messageInputSchema,
  messageSchema,
  searchHitSchema,
  searchQuerySchema,
  sentMessageSchema,
} from "./messages.schemas.ts";

export const history = createRoute({
  method: "get",
  path: "/api/messages",
  tags: ["messages"],
  summary: "Message history with before/after cursors",
  security: [{ bearerAuth: [] }],
  request: { query: historyQuerySchema },
  responses: {
    200: jsonContent(z.array(historyEntrySchema), "Newest first, or oldest first with `after`; deleted messages as `{ id, deleted: true }`"),
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
    201: jsonContent(sentMessageSchema, "Stored, committed and broadcast, with its `seq` (or, for a repeated clientId, the first message as history shows it, or its tombstone if deleted)"),
    ...validationResponses,
    ...protectedResponses,
    403: errorResponse("FORBIDDEN: userId is not the token's user"),
    413: errorResponse("PAYLOAD_TOO_LARGE"),
    422: errorResponse("MESSAGE_REJECTED: refused by moderation (MODERATION=block); the message says why"),
  },
});

const refusals = {
  ...validationResponses,
  ...protectedResponses,
  403: errorResponse("FORBIDDEN: not the author (or, to delete, not a moderator)"),
  404: errorResponse("NOT_FOUND: no such message, or one in a channel the caller cannot see"),
};

export const edit = createRoute({
  method: "patch",
  path: "/api/messages/{id}",
  tags: ["messages"],
  summary: "Edit a message (its author only); members get `message:updated`",
  security: [{ bearerAuth: [] }],
  request: { params: messageIdParamsSchema, body: jsonBody(messageEditSchema) },
  responses: {
    200: jsonContent(messageSchema, "The edited message, with `editedAt`"),
    ...refusals,
    422: errorResponse("MESSAGE_REJECTED: the new text was refused by moderation (MODERATION=block)"),
  },
});

export const remove = createRoute({
  method: "delete",
  path: "/api/messages/{id}",
  tags: ["messages"],
  summary: "Delete a message (its author, a moderator or an admin); members get `message:deleted`",
  security: [{ bearerAuth: [] }],
  request: { params: messageIdParamsSchema },
  responses: { 204: { description: "Deleted (or already deleted); its text is erased" }, ...refusals },
});

export const search = createRoute({
  method: "get",
  path: "/api/messages/search",
  tags: ["messages"],
  summary: "Full-text search over the channels the caller is a member of",
  security: [{ bearerAuth: [] }],
  request: { query: searchQuerySchema },
  responses: {
    200: {
      ...jsonContent(z.array(searchHitSchema), "Best match first, then newest, among the newest SEARCH_MAX_CANDIDATES matches"),
      headers: z.object({
        Link: z.string().optional().openapi({
          description: 'Present when older matches may remain: `</api/messages/search?q=…&before=N&limit=L>; rel="next"`, the next window',
        }),
      }),
    },
    ...validationResponses,
    ...protectedResponses,
    403: errorResponse("FORBIDDEN: channelId is a public channel the caller has not joined"),
    404: errorResponse("NOT_FOUND: channelId is not a channel the caller can see"),
    429: errorResponse("RATE_LIMITED: over RATE_LIMIT_SEARCH; retry after `retryAfter` seconds (also Retry-After)"),
    503: errorResponse("UNAVAILABLE: the search did not finish within SEARCH_TIMEOUT_MS (busy, or too common words); retry after Retry-After, or narrow it"),
  },
});
