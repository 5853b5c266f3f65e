import { createRoute, z } from "@hono/zod-openapi";
import { errorResponse, jsonContent } from "../lib/responses.ts";

const statusSchema = z.object({ status: z.literal("ok") });

const readinessSchema = z
  .object({
    status: z.enum(["ok", "degraded"]).describe("degraded: the database answers but Redis (with REDIS_URL) does not"),
    checks: z.object({
      database: z.literal("ok"),
      redis: z
        .enum(["ok", "unavailable"])
        .optional()
        .describe("Only with REDIS_URL. While unavailable the instance serves its own clients alone (api.md §9)"),
    }),
  })
  .openapi("Readiness");

export const healthz = createRoute({
  method: "get",
  path: "/healthz",
  tags: ["health"],
  summary: "Liveness: the process serves",
  responses: { 200: jsonContent(statusSchema, "Alive") },
});

export const readyz = createRoute({
  method: "get",
  path: "/readyz",
  tags: ["health"],
  summary: "Readiness: the database answers (and whether Redis does)",
  responses: {
    200: jsonContent(readinessSchema, "Ready: the database answers; `degraded` when Redis does not"),
    503: errorResponse("UNAVAILABLE: the database does not answer"),
  },
});
