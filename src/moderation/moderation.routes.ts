import { createRoute, z } from "@hono/zod-openapi";
import { errorResponse, jsonContent, protectedResponses, validationResponses } from "../lib/responses.ts";
import { flagEntrySchema, flagsQuerySchema } from "./moderation.schemas.ts";

export const listFlags = createRoute({
  method: "get",
  path: "/api/admin/flags",
  tags: ["admin"],
  summary: "Messages moderation flagged (MODERATION=flag), newest first (moderator, admin)",
  security: [{ bearerAuth: [] }],
  request: { query: flagsQuerySchema },
  responses: {
    200: jsonContent(z.array(flagEntrySchema), "Flags, newest first; page back with `before`"),
    ...validationResponses,
    ...protectedResponses,
    403: errorResponse("FORBIDDEN: moderators and admins only"),
  },
});
