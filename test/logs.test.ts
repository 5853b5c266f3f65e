import { describe, expect, setDefaultTimeout, test } from "bun:test";
import diagnostics from "node:diagnostics_channel";
import { createLogger } from "../src/lib/logger.ts";
import { sendWithAck, startTestServer, transports, type Json } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §9 logs: JSON lines (pino), one per request with method, route, status, duration,
// request id and user id; socket connects and disconnects; never a token or a password.

const raw: string[] = [];
const t = await startTestServer({ logger: createLogger("info", { write: (line: string) => void raw.push(line) }) });
const password = "correct horse battery staple";
const lines = (): Json[] => raw.map((line) => JSON.parse(line));
const requestLines = () => lines().filter((l) => l.msg === "request");

/** Waits until a log line matching `match` has been written (pino writes synchronously, sockets log on their own time). */
async function logged(match: (line: Json) => boolean, ms = 3_000): Promise<Json> {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = lines().find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no such log line; got ${raw.join("")}`);
    await Bun.sleep(10);
  }
}

describe("one JSON line per request", () => {
  test("every line parses as JSON; a request line has method, route pattern, status, duration, request id and user id", async () => {
    const user = await t.register(undefined, password);
    const res = await fetch(`${t.url}/api/channels/1/messages?limit=5`, { headers: { authorization: `Bearer ${user.token}`, "x-request-id": "log-trace-1" } });
    expect(res.status).toBe(200);
    await res.body?.cancel();
    for (const line of raw) expect(() => JSON.parse(line)).not.toThrow();
    const line = await logged((l) => l.requestId === "log-trace-1");
    expect(line).toEqual({
      level: 30,
      time: expect.any(Number),
      msg: "request",
      requestId: "log-trace-1",
      method: "GET",
      route: "/api/channels/:id/messages",
      status: 200,
      durationMs: expect.any(Number),
      userId: user.user.id,
    });
    expect(line.durationMs).toBeGreaterThanOrEqual(0);
  });

  test.each([
    ["an anonymous 201 (register)", "POST", "/api/auth/register", 201, "/api/auth/register"],
    ["a 400 (bad body)", "POST", "/api/auth/login", 400, "/api/auth/login"],
    ["a 401 (no token)", "GET", "/api/users", 401, "/api/users"],
    ["a 404 (no route)", "GET", "/no/such/route", 404, "/*"],
  ] as const)("%s is logged with its status and user id null", async (_label, method, path, status, route) => {
    const id = `log-${crypto.randomUUID()}`;
    const body = path === "/api/auth/register" ? JSON.stringify({ username: `log_${crypto.randomUUID().slice(0, 8)}`, password }) : method === "POST" ? "{}" : undefined;
    const res = await fetch(`${t.url}${path}`, { method, headers: { "x-request-id": id, "content-type": "application/json" }, body });
    expect(res.status).toBe(status);
    await res.body?.cancel();
    const line = await logged((l) => l.requestId === id);
    expect(line).toMatchObject({ msg: "request", method, status, userId: null });
    // A route pattern, never the raw path of a 404 (which could be anything a client sends).
    expect(line.route).toBe(route);
  });
});

describe("sockets", () => {
  test.each(transports)("over %s: a connect and a disconnect line, each with socket id, user id and transport", async (transport) => {
    const user = await t.register(undefined, password);
    const socket = await t.connect(user.token, transport);
    const id = socket.id;
    await logged((l) => l.msg === "socket connected" && l.socketId === id);
    socket.disconnect();
    const gone = await logged((l) => l.msg === "socket disconnected" && l.socketId === id);
    expect(lines().find((l) => l.msg === "socket connected" && l.socketId === id)).toMatchObject({ userId: user.user.id, transport });
    expect(gone).toMatchObject({ userId: user.user.id, reason: "client namespace disconnect" });
  });
});

describe("no secrets", () => {
  test("after registering, logging in, refreshing, sending and failing, no line holds a token, refresh token or password", async () => {
    const user = await t.register(undefined, password);
    const login = await (
      await fetch(`${t.url}/api/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: user.user.username, password }) })
    ).json() as Json;
    const refreshed = await (
      await fetch(`${t.url}/api/auth/refresh`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ refreshToken: login.refreshToken }) })
    ).json() as Json;
    await fetch(`${t.url}/api/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: user.user.username, password: `${password}!wrong` }) });
    const socket = await t.connect(refreshed.token, "websocket");
    expect((await sendWithAck(socket, { content: "logged?" })).ok).toBe(true);
    socket.disconnect();
    await logged((l) => l.msg === "socket disconnected" && l.userId === user.user.id);

    const all = raw.join("");
    expect(requestLines().length).toBeGreaterThan(5);
    for (const secret of [user.token, user.refreshToken, login.token, login.refreshToken, refreshed.token, refreshed.refreshToken, password]) {
      expect(all).not.toContain(secret);
    }
    expect(all).not.toMatch(/eyJ[\w-]+\.[\w-]+\.[\w-]+/); // no JWT of anyone
    expect(all.toLowerCase()).not.toContain("authorization");
  });
});

describe("pino's tracing channel (src/lib/logger.ts)", () => {
  test("hasSubscribers is false until something subscribes, so pino serialises lines directly; a subscriber sees each line traced", () => {
    const channel = diagnostics.tracingChannel("pino_asJson");
    expect(channel.hasSubscribers).toBe(false);
    const traced: unknown[] = [];
    const handlers = { start: (message: unknown) => void traced.push(message), end() {}, asyncStart() {}, asyncEnd() {}, error() {} };
    channel.subscribe(handlers);
    try {
      expect(channel.hasSubscribers).toBe(true);
      const lines: string[] = [];
      createLogger("info", { write: (line: string) => void lines.push(line) }).info({ probe: 1 }, "traced");
      expect(lines).toHaveLength(1);
      expect(traced).toHaveLength(1);
    } finally {
      channel.unsubscribe(handlers);
    }
    expect(channel.hasSubscribers).toBe(false);
  });
});
