import { createMiddleware } from "hono/factory";
import { join } from "node:path";
import type { AppEnv } from "../lib/app-env.ts";

/** The chat page's sources: plain HTML and CSS, and TypeScript that Bun bundles for the browser. */
const webDir = join(import.meta.dir, "../../web");

/**
 * Only this origin, no inline script or style: the page renders other people's text, so even a
 * rendering bug must not be able to run script or load from elsewhere. `ws:`/`wss:` for the
 * Socket.IO websocket (older browsers do not count same-origin ws under 'self').
 */
export const pageCsp = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self' ws: wss:",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

interface Asset {
  body: string;
  type: string;
}

/**
 * Bundles web/app.ts (socket.io-client included, from this service's node_modules) once per
 * process, on the first request for the page: start-up and the tests that never open it pay
 * nothing. A failed build is not cached, so the next request tries again.
 */
let built: Promise<Record<string, Asset>> | undefined;

async function build(): Promise<Record<string, Asset>> {
  const result = await Bun.build({ entrypoints: [join(webDir, "app.ts")], target: "browser", minify: true, format: "esm" });
  const output = result.outputs[0];
  if (!result.success || !output) throw new AggregateError(result.logs, "building web/app.ts failed");
  return {
    "/": { body: await Bun.file(join(webDir, "index.html")).text(), type: "text/html; charset=utf-8" },
    "/app.js": { body: await output.text(), type: "text/javascript; charset=utf-8" },
    "/styles.css": { body: await Bun.file(join(webDir, "styles.css")).text(), type: "text/css; charset=utf-8" },
    "/favicon.svg": { body: await Bun.file(join(webDir, "favicon.svg")).text(), type: "image/svg+xml" },
  };
}

function assets(): Promise<Record<string, Asset>> {
  built ??= build().catch((error: unknown) => {
    built = undefined;
    throw error;
  });
  return built;
}

/**
 * `GET /` (the chat page), `/app.js`, `/styles.css` and `/favicon.svg`. Middleware rather than routes: the page is
 * a client of the API, not part of it, so it stays out of the OpenAPI document and the route list.
 */
export function webPage() {
  const paths = new Set(["/", "/app.js", "/styles.css", "/favicon.svg"]);
  return createMiddleware<AppEnv>(async (c, next) => {
    if ((c.req.method !== "GET" && c.req.method !== "HEAD") || !paths.has(c.req.path)) return next();
    const asset = (await assets())[c.req.path]!;
    return c.body(asset.body, 200, {
      "content-type": asset.type,
      "content-security-policy": pageCsp,
      // Rebuilt per process, so a deploy must not leave a stale bundle in a browser cache.
      "cache-control": "no-cache",
    });
  });
}
