import { createRoute, z } from "@hono/zod-openapi";
import { errorResponse, jsonContent } from "../lib/responses.ts";

const statusSchema = z.object({ status: z.literal("ok") });

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
  summary: "Readiness: the database answers",
  responses: {
    200: jsonContent(statusSchema, "Ready"),
    503: errorResponse("UNAVAILABLE: the database does not answer"),
  },
});
