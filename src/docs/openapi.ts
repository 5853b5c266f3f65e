import type { AppRouter } from "../lib/app-env.ts";
import pkg from "../../package.json" with { type: "json" };
import { mountAsyncApi } from "./asyncapi.ts";

/** The OpenAPI document's header; paths and schemas come from the routes' own zod schemas. */
export const openApiInfo = {
  openapi: "3.1.0",
  info: {
    title: "chat-backend",
    version: pkg.version,
    description: "REST half of the chat API (docs/api.md). The Socket.IO half is described at /asyncapi.json.",
  },
};

// Swagger UI is served from the swagger-ui-dist package, so /docs works with no network. A Map,
// not an object literal: the name comes from the URL, and `/docs/__proto__` must be a miss.
const assets = new Map([
  ["swagger-ui.css", { file: "swagger-ui-dist/swagger-ui.css", type: "text/css; charset=utf-8" }],
  ["swagger-ui-bundle.js", { file: "swagger-ui-dist/swagger-ui-bundle.js", type: "text/javascript; charset=utf-8" }],
]);

const page = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>chat-backend API</title><link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>`;

const init = `window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });`;

/**
 * `GET /openapi.json` (OpenAPI 3.1, generated from the same zod schemas that validate requests)
 * and `GET /docs`, which renders it. Called after every router is mounted.
 */
export function mountApiDocs(app: AppRouter): void {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearerAuth", { type: "http", scheme: "bearer", bearerFormat: "JWT" });
  app.openAPIRegistry.registerComponent("securitySchemes", "metricsToken", { type: "http", scheme: "bearer", description: "METRICS_TOKEN, when set" });
  app.doc31("/openapi.json", openApiInfo);
  mountAsyncApi(app, openApiInfo.info);
  app.get("/docs", (c) => c.html(page));
  app.get("/docs/init.js", (c) => c.body(init, 200, { "content-type": "text/javascript; charset=utf-8" }));
  app.get("/docs/:asset", async (c) => {
    const asset = assets.get(c.req.param("asset"));
    if (!asset) return c.notFound();
    const file = Bun.file(Bun.resolveSync(asset.file, import.meta.dir));
    return c.body(await file.arrayBuffer(), 200, { "content-type": asset.type, "cache-control": "public, max-age=86400" });
  });
}
