import { z } from "@hono/zod-openapi";
import { idParam, limitParam } from "../lib/schemas.ts";

export const auditQuerySchema = z.object({
  action: z.string().regex(/^[a-z_]{1,32}$/, "must be an action name such as login_failed").optional(),
  actorId: idParam.optional().openapi({ type: "integer" }),
  before: idParam.optional().openapi({ type: "integer", description: "older than this entry id" }),
  limit: limitParam(1, 200, 50),
});

export type AuditQuery = z.output<typeof auditQuerySchema>;

export const auditEntrySchema = z
  .object({
    id: z.number().int(),
    at: z.string().openapi({ format: "date-time" }),
    actorId: z.number().int().nullable(),
    action: z.string(),
    targetType: z.string().nullable(),
    targetId: z.string().nullable(),
    ip: z.string().nullable(),
    meta: z.record(z.string(), z.unknown()),
  })
  .openapi("AuditEntry");

export type AuditEntry = z.infer<typeof auditEntrySchema>;
