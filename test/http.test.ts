import pino from "pino";
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createApp } from "../src/app.ts";
import { createDb, type Db } from "../src/lib/db.ts";
import { createLogger } from "../src/lib/logger.ts";
import { createTokenSigner } from "../src/lib/tokens.ts";
import {
  nextEvent,
  sendWithAck,
  startTestServer,
  testConfig,
  testJwtSecret,
  transports,
  uniqueName,
  type ChatClient,
} from "./helpers/server.ts";
import { expectError, saneRequestId } from "./helpers/expect-error.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §0 (conventions: error shape, X-Request-Id, body limit) and §5 (health), through a
// real server on an ephemeral port, plus `app.request()` on apps built over a broken database.

const t = await startTestServer();
const { token } = await t.register();
const password = "correct horse battery";

const json = { "content-type": "application/json" };
const bearer = (tok: string) => ({ authorization: `Bearer ${tok}` });

describe("§5 health", () => {
  test("GET /healthz → 200 {status: ok}", async () => {
    const res = await fetch(`${t.url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type") ?? "").toMatch(/^application\/json\b/);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  test("GET /readyz → 200 {status: ok, checks: {database: ok}} when the database answers (no REDIS_URL: no redis check)", async () => {
    const res = await fetch(`${t.url}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok", checks: { database: "ok" } });
  });
});

describe("a database that does not answer → 503 UNAVAILABLE, promptly, never 500", () => {
  // Nothing listens on port 1: every connection attempt is refused.
  const deadUrl = "postgresql://postgres@127.0.0.1:1/none";
  const dead = createApp({ config: testConfig(deadUrl), db: createDb(deadUrl), logger: createLogger("silent") });

  /** Runs `request`, asserting it answers within `ms`. */
  async function prompt(request: () => Response | Promise<Response>, ms = 6_000): Promise<Response> {
    const started = performance.now();
    const res = await request();
    expect(performance.now() - started).toBeLessThan(ms);
    return res;
  }

  test("GET /readyz → 503 in the error shape", async () => {
    const res = await prompt(() => dead.app.request("/readyz"));
    await expectError(res, 503, "UNAVAILABLE");
  });

  test("GET /healthz still → 200: the process serves", async () => {
    const res = await dead.app.request("/healthz");
    expect(res.status).toBe(200);
  });

  test("POST /api/auth/login → 503", async () => {
    const res = await prompt(() =>
      dead.app.request("/api/auth/login", { method: "POST", headers: json, body: JSON.stringify({ username: "alice", password }) }),
    );
    await expectError(res, 503, "UNAVAILABLE");
  });

  test("POST /api/auth/register → 503", async () => {
    const res = await prompt(() =>
      dead.app.request("/api/auth/register", { method: "POST", headers: json, body: JSON.stringify({ username: uniqueName(), password }) }),
    );
    await expectError(res, 503, "UNAVAILABLE");
  });

  test("GET /api/users and GET /api/messages with a valid token → 503", async () => {
    // A token the dead app accepts: same secret, a user that would exist.
    const signer = createTokenSigner(testJwtSecret, 900);
    const valid = await signer.signAccess({ id: 1, username: "alice", role: "user", sessionId: crypto.randomUUID() });
    for (const path of ["/api/users", "/api/messages"]) {
      const res = await prompt(() => dead.app.request(path, { headers: bearer(valid) }));
      await expectError(res, 503, "UNAVAILABLE");
    }
  });
});

describe("§0 unknown routes", () => {
  test.each([
    ["GET", "/nope"],
    ["GET", "/api/nope"],
    ["POST", "/api/nope"],
    ["GET", "/api/users/me/extra"],
  ])("%s %s → 404 NOT_FOUND", async (method, path) => {
    const res = await fetch(`${t.url}${path}`, { method, headers: { ...bearer(token) } });
    await expectError(res, 404, "NOT_FOUND");
  });

  test.each([
    ["DELETE", "/healthz"],
    ["POST", "/readyz"],
    ["GET", "/api/auth/login"],
    ["PUT", "/api/auth/register"],
    ["DELETE", "/api/messages"],
    ["DELETE", "/api/users/me"],
  ])("wrong method: %s %s → 404 in the error shape", async (method, path) => {
    const res = await fetch(`${t.url}${path}`, { method, headers: { ...bearer(token), ...json }, body: method === "GET" ? undefined : "{}" });
    await expectError(res, 404, "NOT_FOUND");
  });
});

describe("§0 X-Request-Id", () => {
  test("generated when absent: non-empty, different per request", async () => {
    const a = (await fetch(`${t.url}/healthz`)).headers.get("x-request-id");
    const b = (await fetch(`${t.url}/healthz`)).headers.get("x-request-id");
    expect(a ?? "").toMatch(saneRequestId);
    expect(b ?? "").toMatch(saneRequestId);
    expect(a).not.toBe(b);
  });

  test.each([
    ["a short id", "client-id-123"],
    ["a UUID", "0f8fad5b-d9cb-469f-a165-70867728950e"],
    ["underscores and =", "abc_DEF="],
    ["255 characters", "x".repeat(255)],
  ])(
    "echoed when the client sends a sane one: %s",
    async (_, id) => {
      for (const res of [
        await fetch(`${t.url}/healthz`, { headers: { "x-request-id": id } }),
        await fetch(`${t.url}/nope`, { headers: { "x-request-id": id } }),
        await fetch(`${t.url}/api/users`, { headers: { "x-request-id": id } }),
      ]) {
        expect(res.headers.get("x-request-id")).toBe(id);
      }
    },
  );

  test.each([
    ["markup", "<script>alert(1)</script>"],
    ["spaces", "has spaces in it"],
    ["a semicolon", "a;b"],
    ["a non-ASCII letter", "ü"],
    ["300 characters", "x".repeat(300)],
  ])(
    "replaced when the client sends an unsafe one: %s",
    async (_, id) => {
      const res = await fetch(`${t.url}/healthz`, { headers: { "x-request-id": id } });
      const echoed = res.headers.get("x-request-id") ?? "";
      expect(echoed).not.toBe(id);
      expect(echoed).toMatch(saneRequestId);
    },
  );
});

describe("§0 every error has one shape", () => {
  test("400 BAD_JSON: malformed JSON", async () => {
    const res = await fetch(`${t.url}/api/auth/login`, { method: "POST", headers: json, body: '{"username": "a",' });
    await expectError(res, 400, "BAD_JSON");
  });

  test("400 BAD_JSON: a body that is not JSON", async () => {
    const res = await fetch(`${t.url}/api/auth/login`, { method: "POST", headers: { "content-type": "text/plain" }, body: "username=a" });
    await expectError(res, 400, "BAD_JSON");
  });

  test("400 VALIDATION_FAILED lists each field", async () => {
    const res = await fetch(`${t.url}/api/auth/register`, { method: "POST", headers: json, body: JSON.stringify({ username: "a" }) });
    const body = await expectError(res, 400, "VALIDATION_FAILED");
    const paths = (body.error.details as { path: string }[]).map((d) => d.path);
    expect(paths).toContain("username");
    expect(paths).toContain("password");
  });

  test("400 VALIDATION_FAILED on a bad query", async () => {
    const res = await fetch(`${t.url}/api/messages?limit=abc`, { headers: bearer(token) });
    await expectError(res, 400, "VALIDATION_FAILED");
  });

  test.each([
    ["no token", {}],
    ["a malformed header", { authorization: "Token abc" }],
    ["a forged token", bearer(`${token.slice(0, -4)}AAAA`)],
  ])("401 UNAUTHORIZED: %s", async (_, headers) => {
    const res = await fetch(`${t.url}/api/users`, { headers });
    await expectError(res, 401, "UNAUTHORIZED");
  });

  test("401 INVALID_CREDENTIALS", async () => {
    const res = await fetch(`${t.url}/api/auth/login`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ username: uniqueName("ghost"), password }),
    });
    await expectError(res, 401, "INVALID_CREDENTIALS");
  });

  test("409 USERNAME_TAKEN", async () => {
    const { user } = await t.register();
    const res = await fetch(`${t.url}/api/auth/register`, { method: "POST", headers: json, body: JSON.stringify({ username: user.username, password }) });
    await expectError(res, 409, "USERNAME_TAKEN");
  });
});

describe("§0 body limit", () => {
  /** A login body of about `bytes` bytes (the password pads it). */
  const bodyOf = (bytes: number) => JSON.stringify({ username: "someone", password: "p".repeat(bytes - 40) });

  test("over 64 KiB by default → 413 PAYLOAD_TOO_LARGE", async () => {
    const body = bodyOf(65 * 1024 + 100);
    expect(body.length).toBeGreaterThan(64 * 1024);
    const res = await fetch(`${t.url}/api/auth/login`, { method: "POST", headers: json, body });
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
  });

  test("a body under the limit is read (and fails validation, not the limit)", async () => {
    const res = await fetch(`${t.url}/api/auth/login`, { method: "POST", headers: json, body: bodyOf(60 * 1024) });
    await expectError(res, 400, "VALIDATION_FAILED");
  });

  test("a chunked body with no Content-Length is counted as it streams → 413", async () => {
    const chunk = new TextEncoder().encode(" ".repeat(8 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 80 * 1024) {
          controller.enqueue(new TextEncoder().encode("{}"));
          controller.close();
          return;
        }
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const res = await fetch(`${t.url}/api/auth/login`, { method: "POST", headers: json, body: stream, duplex: "half" } as RequestInit);
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
  });

  test("BODY_LIMIT_BYTES=2048 refuses a 3 KiB body and accepts a 1.5 KiB one", async () => {
    const small = await startTestServer({ env: { BODY_LIMIT_BYTES: "2048" }, database: t.database });
    const over = await fetch(`${small.url}/api/auth/login`, { method: "POST", headers: json, body: bodyOf(3 * 1024) });
    await expectError(over, 413, "PAYLOAD_TOO_LARGE");
    const under = await fetch(`${small.url}/api/auth/login`, { method: "POST", headers: json, body: bodyOf(1536) });
    await expectError(under, 400, "VALIDATION_FAILED");
  });
});

describe("a socket payload over SOCKET_MAX_BUFFER_BYTES (64 KiB) closes only that socket", () => {
  test.each(transports)("offender over %s", async (transport) => {
    const [offenderUser, otherUser] = [await t.register(), await t.register()];
    const offender = await t.connect(offenderUser.token, transport);
    const bystanders: ChatClient[] = [await t.connect(otherUser.token, "websocket"), await t.connect(otherUser.token, "polling")];

    // Just under the limit: read, refused by validation (content is 1–4000 chars), connection kept.
    const nearLimit = await sendWithAck(offender, { content: "y".repeat(60 * 1024) });
    expect(nearLimit).toMatchObject({ ok: false, error: { code: "VALIDATION_FAILED" } });
    expect(offender.connected).toBe(true);

    const closed = nextEvent<string>(offender, "disconnect", 10_000);
    offender.emit("message", { content: "x".repeat(100 * 1024) });
    expect(await closed).toMatch(/transport (close|error)/);

    // Everyone else is still connected and chatting; REST still serves.
    for (const socket of bystanders) expect(socket.connected).toBe(true);
    const received = bystanders.map((socket) => nextEvent(socket, "message"));
    const ack = await sendWithAck(bystanders[0]!, { content: `still here after a ${transport} offender` });
    expect(ack.ok).toBe(true);
    for (const message of await Promise.all(received)) expect(message).toEqual(ack.message);
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    // The offender can come back with a fresh connection.
    const again = await t.connect(offenderUser.token, transport);
    expect(again.connected).toBe(true);
    again.disconnect();
    for (const socket of bystanders) socket.disconnect();
  });
});

describe("500 INTERNAL: an unexpected exception says nothing more", () => {
  const secretDetail = "kaboom: relation secret_table at /srv/app/src/users.ts:42";

  /** The test database's client, except that `user.findMany` throws a plain Error. */
  const brokenDb = new Proxy(t.database.db, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (property !== "user") return typeof value === "function" ? value.bind(target) : value;
      return new Proxy(value as object, {
        get(users, method, usersReceiver) {
          if (method === "findMany") {
            return async () => {
              throw new Error(secretDetail);
            };
          }
          const fn = Reflect.get(users, method, usersReceiver);
          return typeof fn === "function" ? fn.bind(users) : fn;
        },
      });
    },
  }) as Db;
  // A real pino logger writing into an array, to see what an operator would see.
  const logLines: Record<string, unknown>[] = [];
  const captureLogger = pino({ level: "info" }, { write: (line: string) => logLines.push(JSON.parse(line)) });
  const broken = createApp({ config: testConfig(t.database.url), db: brokenDb, logger: captureLogger });

  test("GET /api/users → 500 {error: {code: INTERNAL}} with no detail", async () => {
    const res = await broken.app.request("/api/users", { headers: bearer(token) });
    const body = await expectError(res, 500, "INTERNAL");
    expect(body.error).toEqual({ code: "INTERNAL", message: expect.any(String) });
    expect(JSON.stringify(body)).not.toContain("kaboom");
    expect(JSON.stringify(body)).not.toContain("secret_table");
  });

  test("the operator gets the cause in the log, tied to the request id the client saw", async () => {
    const res = await broken.app.request("/api/users", { headers: { ...bearer(token), "X-Request-Id": "trace-500-abc" } });
    expect(res.status).toBe(500);
    expect(res.headers.get("x-request-id")).toBe("trace-500-abc");
    const line = logLines.find((l) => l.requestId === "trace-500-abc");
    expect(line).toMatchObject({ level: 50, requestId: "trace-500-abc", method: "GET", path: "/api/users" });
    expect(JSON.stringify(line)).toContain("kaboom");
  });

  test("the same app still answers routes that do not hit the broken call", async () => {
    const res = await broken.app.request("/api/users/me", { headers: bearer(token) });
    expect(res.status).toBe(200);
  });
});
