import { createRoute, z } from "@hono/zod-openapi";
import { errorResponse, protectedResponses } from "../lib/responses.ts";

export const scrape = createRoute({
  method: "get",
  path: "/metrics",
  tags: ["operations"],
  summary: "Prometheus metrics (requests, sockets, messages, persist latency, process)",
  description:
    "Needs `Authorization: Bearer <METRICS_TOKEN>` when METRICS_TOKEN is set. Without it: open in development, 404 everywhere else.",
  security: [{ metricsToken: [] }],
  responses: {
    200: { content: { "text/plain": { schema: z.string() } }, description: "Prometheus text exposition format 0.0.4" },
    ...protectedResponses,
    404: errorResponse("Metrics are off: no METRICS_TOKEN outside development (NOT_FOUND)"),
  },
});
