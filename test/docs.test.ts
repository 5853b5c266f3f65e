import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { clientEvents, serverEvents } from "../src/realtime/events.ts";
import { sendWithAck, startTestServer, type Json } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §9: GET /openapi.json (OpenAPI 3.1 generated from the zod schemas that validate
// requests) and GET /docs, which renders it with no network access.

const t = await startTestServer();
const doc: Json = await (await fetch(`${t.url}/openapi.json`)).json();

const methods = ["get", "post", "put", "patch", "delete"] as const;

/** Every REST route the server really answers, as "METHOD /openapi/{style}" (docs routes aside). */
function servedRoutes(): string[] {
  const routes = t.app.app.routes
    .filter((r) => r.method !== "ALL" && !r.path.includes("*"))
    .filter((r) => !r.path.startsWith("/docs") && r.path !== "/openapi.json" && r.path !== "/asyncapi.json")
    .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, "{$1}")}`);
  return [...new Set(routes)].sort();
}

function documentedRoutes(): string[] {
  return Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, item]) => methods.filter((m) => m in item).map((m) => `${m.toUpperCase()} ${path}`))
    .sort();
}

function operations(): { route: string; op: Json }[] {
  return Object.entries(doc.paths as Record<string, Record<string, Json>>).flatMap(([path, item]) =>
    methods.filter((m) => m in item).map((m) => ({ route: `${m.toUpperCase()} ${path}`, op: item[m] })),
  );
}

describe("GET /openapi.json", () => {
  test("is a valid OpenAPI 3.1 document", async () => {
    const validator = new Validator();
    const result = await validator.validate(doc);
    expect({ valid: result.valid, errors: result.errors }).toEqual({ valid: true, errors: undefined });
    expect(validator.version).toBe("3.1");
    expect(doc.openapi).toBe("3.1.0");
  });

  test("lists exactly the routes the server answers", () => {
    const served = servedRoutes();
    expect(served.length).toBeGreaterThan(20);
    expect(documentedRoutes()).toEqual(served);
  });

  test("every protected operation names bearer auth and lists 401; every operation with input lists 400", () => {
    const open = new Set(["GET /healthz", "GET /readyz", "POST /api/auth/register", "POST /api/auth/login", "POST /api/auth/refresh", "POST /api/auth/logout"]);
    for (const { route, op } of operations()) {
      const statuses = Object.keys(op.responses);
      if (route === "GET /metrics") {
        expect(op.security).toEqual([{ metricsToken: [] }]);
      } else if (!open.has(route)) {
        expect({ route, security: op.security }).toEqual({ route, security: [{ bearerAuth: [] }] });
        expect({ route, has401: statuses.includes("401") }).toEqual({ route, has401: true });
      }
      const takesInput = op.requestBody !== undefined || (op.parameters ?? []).length > 0;
      if (takesInput) expect({ route, has400: statuses.includes("400") }).toEqual({ route, has400: true });
      // Every error response is the §0 error shape.
      for (const status of statuses.filter((s) => Number(s) >= 400)) {
        expect({ route, status, schema: op.responses[status].content["application/json"].schema }).toEqual({ route, status, schema: { $ref: "#/components/schemas/Error" } });
      }
    }
    expect(doc.components.securitySchemes.bearerAuth).toEqual({ type: "http", scheme: "bearer", bearerFormat: "JWT" });
  });

  test("the documented limits are the ones the validators enforce (one schema for both)", async () => {
    const input = doc.components.schemas.MessageInput;
    expect(input.properties.content).toMatchObject({ type: "string", minLength: 1, maxLength: 4000 });
    // The schema says 4000; the server refuses 4001 and accepts 4000.
    const { token } = await t.register();
    const post = (content: string) =>
      fetch(`${t.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ content }) });
    expect((await post("я".repeat(4000))).status).toBe(201);
    expect((await post("я".repeat(4001))).status).toBe(400);
    const search = operations().find((o) => o.route === "GET /api/messages/search")!.op;
    const limit = search.parameters.find((p: Json) => p.name === "limit");
    expect(limit.schema).toMatchObject({ minimum: 1, maximum: 100, default: 20 });
  });

  test("needs no token, and answers with JSON", async () => {
    const res = await fetch(`${t.url}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  });
});

describe("GET /docs", () => {
  test("an HTML page that loads Swagger UI from this server only, pointed at /openapi.json", async () => {
    const res = await fetch(`${t.url}/docs`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).not.toMatch(/https?:\/\//);
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets.sort()).toEqual(["/docs/init.js", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"]);
    for (const asset of assets) {
      const a = await fetch(`${t.url}${asset}`);
      expect({ asset, status: a.status }).toEqual({ asset, status: 200 });
      expect((await a.text()).length).toBeGreaterThan(asset.endsWith("init.js") ? 10 : 10_000);
    }
    expect(await (await fetch(`${t.url}/docs/init.js`)).text()).toContain('"/openapi.json"');
  });

  test.each(["/docs/index.html", "/docs/..%2Fpackage.json", "/docs/swagger-ui-bundle.js.map"])("%s → 404 in the error shape (only the listed assets are served)", async (path) => {
    const res = await fetch(`${t.url}${path}`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as Json).error.code).toBe("NOT_FOUND");
  });
});

describe("GET /asyncapi.json (the Socket.IO events)", () => {
  test("an AsyncAPI 3.0 document listing every event of the contract, both directions, with payload schemas", async () => {
    const res = await fetch(`${t.url}/asyncapi.json`);
    expect(res.status).toBe(200);
    const asyncDoc: Json = await res.json();
    expect(asyncDoc.asyncapi).toBe("3.0.0");
    expect(asyncDoc.servers.local).toMatchObject({ protocol: "ws", pathname: "/socket.io/" });
    const messages = asyncDoc.channels.socket.messages as Record<string, Json>;
    const named = (prefix: string) =>
      Object.entries(messages)
        .filter(([key]) => key.startsWith(prefix))
        .map(([, m]) => m.name)
        .sort();
    expect(named("client_")).toEqual(Object.keys(clientEvents).sort());
    expect(named("server_")).toEqual(Object.keys(serverEvents).sort());
    expect(named("server_")).toEqual(["channel:joined", "channel:left", "channel:read", "message", "message:deleted", "message:error", "message:updated", "presence", "resync", "typing", "typing:error"]);
    for (const message of Object.values(messages)) {
      expect(message.payload.type).toBe("object");
      expect(typeof message.summary).toBe("string");
    }
    // The documented limits are the validators' own.
    expect(messages.client_message.payload.properties.content).toMatchObject({ minLength: 1, maxLength: 4000 });
    expect(messages.client_message.payload.required).toEqual(["content"]);
    expect(messages.client_typing.payload.required).toEqual(["channelId"]);
    // The channel log's events carry their seq (api.md §11); resync names the channel and its head.
    for (const key of ["server_message", "server_message_updated", "server_message_deleted"]) {
      expect(messages[key]!.payload.required).toContain("seq");
      expect(messages[key]!.payload.properties.seq).toMatchObject({ type: "integer", exclusiveMinimum: 0 });
    }
    expect(messages.server_resync.payload.required).toEqual(["channelId", "head"]);
    expect(Object.keys(messages.server_resync.payload.properties).sort()).toEqual(["channelId", "head"]);
    // Every operation points at a message that exists.
    for (const op of Object.values(asyncDoc.operations as Record<string, Json>)) {
      const ref: string = op.messages[0].$ref;
      expect(messages[ref.split("/").at(-1)!]).toBeDefined();
      expect(["send", "receive"]).toContain(op.action);
    }
  });

  test("what the server really emits matches the documented schemas", async () => {
    const { token } = await t.register();
    const socket = await t.connect(token, "websocket");
    try {
      const broadcast = new Promise<unknown>((resolve) => socket.once("message", resolve));
      const ack = await sendWithAck(socket, { content: "documented" });
      expect(clientEvents.message.ack.safeParse(ack).success).toBe(true);
      expect(serverEvents.message.payload.strict().safeParse(await broadcast).success).toBe(true);
      const refused = await sendWithAck(socket, { content: "" });
      expect(clientEvents.message.ack.safeParse(refused).success).toBe(true);
      expect(refused.ok).toBe(false);
    } finally {
      socket.disconnect();
    }
  });
});
