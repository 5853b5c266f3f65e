import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { Glob } from "bun";
import { startTestServer } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// The chat page at / (web/, served by src/web/): the page, its bundle and its styles come from
// this service alone, under a CSP that allows nothing else. The browser test drives the page itself.

const t = await startTestServer();
const get = (path: string) => fetch(`${t.url}${path}`);

/** URLs with a host in a text, minus those socket.io-client only prints in an error message. */
function remoteUrls(text: string): string[] {
  const docsLink = /^https:\/\/socket\.io\/docs\//;
  return (text.match(/(https?:)?\/\/[a-z0-9][a-z0-9.-]*\.[a-z]{2,}[^\s"'`)]*/gi) ?? []).filter((url) => !docsLink.test(url));
}

describe("GET /", () => {
  test("is the page: HTML, a CSP that allows only this origin and no inline script, the usual secure headers", async () => {
    const res = await get("/");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const csp = res.headers.get("content-security-policy") ?? "";
    const directives = Object.fromEntries(csp.split(/;\s*/).map((d) => [d.split(" ")[0], d.split(" ").slice(1).join(" ")]));
    expect(directives).toMatchObject({ "default-src": "'self'", "script-src": "'self'", "style-src": "'self'", "connect-src": "'self' ws: wss:", "img-src": "'self' data:" });
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).not.toContain("unsafe-eval");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    const html = await res.text();
    expect(html).toContain('id="auth"');
    expect(html).toContain('id="messages"');
    expect(html).toContain('id="composer"');
  });

  test("references only same-origin scripts and styles, with no inline script or style", async () => {
    const html = await (await get("/")).text();
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.map(([, attrs]) => /src="([^"]+)"/.exec(attrs!)?.[1])).toEqual(["/app.js"]);
    expect(scripts.every(([, , body]) => body!.trim() === "")).toBe(true);
    expect(html).not.toMatch(/<style\b|\sstyle=|\son[a-z]+=/i);
    const refs = [...html.matchAll(/\s(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    for (const ref of refs) expect({ ref, local: ref.startsWith("/") && !ref.startsWith("//") || ref.startsWith("data:") }).toEqual({ ref, local: true });
    expect(remoteUrls(html)).toEqual([]);
  });

  test("everything the page loads is served by the service itself (it works with no network)", async () => {
    const html = await (await get("/")).text();
    const local = [...html.matchAll(/\s(?:src|href)="(\/[^"]*)"/g)].map((m) => m[1]!);
    expect(local.sort()).toEqual(["/app.js", "/favicon.svg", "/styles.css"]);
    for (const path of local) expect({ path, status: (await get(path)).status }).toEqual({ path, status: 200 });
  });

  test("only GET and HEAD: other methods get the API's 404", async () => {
    expect((await fetch(`${t.url}/`, { method: "HEAD" })).status).toBe(200);
    const res = await fetch(`${t.url}/`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
  });
});

describe("GET /app.js, /styles.css and /favicon.svg", () => {
  test("the bundle is JavaScript, includes socket.io-client, and names no other host", async () => {
    const res = await get("/app.js");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(res.headers.get("content-security-policy")).toContain("default-src 'self'");
    const js = await res.text();
    // socket.io-client is bundled in (its packet types and path), not fetched from anywhere.
    expect(js).toContain("/socket.io");
    expect(js).toContain("websocket");
    expect(remoteUrls(js)).toEqual([]);
    expect(js).not.toMatch(/\bimport\s*\(|\bimport\s[^;]*from\s*["']/);
  });

  test("built once per process: the same bytes on every request", async () => {
    const [first, second] = await Promise.all([get("/app.js").then((r) => r.text()), get("/app.js").then((r) => r.text())]);
    expect(second).toBe(first);
  });

  test("the favicon is an SVG of the service's own, with no script and nothing from elsewhere", async () => {
    const res = await get("/favicon.svg");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/svg+xml");
    const svg = await res.text();
    expect(svg).toStartWith("<svg");
    expect(svg).not.toMatch(/<script|on\w+=|href=/i);
    expect(remoteUrls(svg.replace("http://www.w3.org/2000/svg", ""))).toEqual([]);
  });

  test("the stylesheet is CSS", async () => {
    const res = await get("/styles.css");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(await res.text()).toContain("#messages");
  });
});

test("the page's code never turns data into HTML (only text nodes; search highlights are split, not parsed)", async () => {
  for await (const file of new Glob("web/*.ts").scan(import.meta.dir + "/..")) {
    // Comments may name what the code avoids.
    const source = (await Bun.file(`${import.meta.dir}/../${file}`).text()).replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
    expect({ file, html: /innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|createContextualFragment/.test(source) }).toEqual({ file, html: false });
  }
});
