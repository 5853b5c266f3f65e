import { createRoute, z } from "@hono/zod-openapi";
import { errorResponse, jsonContent, protectedResponses, validationResponses } from "../lib/responses.ts";
import { auditEntrySchema, auditQuerySchema } from "./audit.schemas.ts";

export const list = createRoute({
  method: "get",
  path: "/api/admin/audit",
  tags: ["admin"],
  summary: "The audit trail, newest first (admin)",
  security: [{ bearerAuth: [] }],
  request: { query: auditQuerySchema },
  responses: {
    200: jsonContent(z.array(auditEntrySchema), "Entries, newest first; page back with `before`"),
    ...validationResponses,
    ...protectedResponses,
    403: errorResponse("FORBIDDEN: admins only"),
  },
});
