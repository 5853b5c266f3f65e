import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { sendWithAck, startTestServer, type ChatClient, type TestServer } from "./helpers/server.ts";
import { expectError } from "./helpers/expect-error.ts";
import { TEST_TIMEOUT_MS, testMetricsToken } from "./helpers/env.ts";
import { createLogger } from "../src/lib/logger.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §9: GET /metrics in Prometheus text (prom-client) with HTTP requests and latency by
// route, connected sockets, messages accepted/rejected, message persist latency and process
// figures; guarded by METRICS_TOKEN when set, off without it outside development (§7).

const metricsToken = "another-metrics-token-0123456789";
const [t, guarded] = await Promise.all([startTestServer(), startTestServer({ env: { METRICS_TOKEN: metricsToken } })]);
afterAll(() => guarded.stop());

async function scrape(server: TestServer = t, token: string | undefined = testMetricsToken): Promise<string> {
  const res = await fetch(`${server.url}/metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** The value of one sample (0 when absent), labels given in any order. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return 0;
}

const json = { "content-type": "application/json" };

describe("GET /metrics", () => {
  test("Prometheus text with the series of §9, process figures included", async () => {
    const text = await scrape();
    for (const series of [
      "http_requests_total",
      "http_request_duration_seconds",
      "socketio_connected_sockets",
      "socketio_pending_handshakes",
      "socketio_engine_sessions",
      "socketio_buffered_bytes",
      "socketio_buffered_bytes_max",
      "socketio_slow_clients_dropped_total",
      "chat_messages_total",
      "chat_message_persist_seconds",
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "nodejs_eventloop_lag_seconds",
    ]) {
      expect(text).toContain(`# TYPE ${series} `);
    }
  });

  test("requests are counted by method, route pattern and status, with their latency", async () => {
    const { token, user } = await t.register();
    const before = await scrape();
    const okLabels = { method: "GET", route: "/api/users", status: "200" };
    for (let i = 0; i < 3; i++) await (await fetch(`${t.url}/api/users`, { headers: { authorization: `Bearer ${token}` } })).body?.cancel();
    await (await fetch(`${t.url}/api/users/${user.id}`, { headers: { authorization: `Bearer ${token}` } })).body?.cancel();
    const unauthorized = { method: "GET", route: "/api/users", status: "401" };
    await (await fetch(`${t.url}/api/users`)).body?.cancel();
    const after = await scrape();
    expect(sample(after, "http_requests_total", okLabels) - sample(before, "http_requests_total", okLabels)).toBe(3);
    expect(sample(after, "http_requests_total", unauthorized) - sample(before, "http_requests_total", unauthorized)).toBe(1);
    expect(sample(after, "http_request_duration_seconds_count", okLabels) - sample(before, "http_request_duration_seconds_count", okLabels)).toBe(3);
    expect(sample(after, "http_request_duration_seconds_sum", okLabels)).toBeGreaterThan(sample(before, "http_request_duration_seconds_sum", okLabels));
    // Route patterns, not raw paths: no label carries a user id.
    expect(after).not.toContain(`route="/api/users/${user.id}"`);
  });

  test("connected sockets follow connects and disconnects", async () => {
    const { token } = await t.register();
    const base = sample(await scrape(), "socketio_connected_sockets");
    const sockets: ChatClient[] = [await t.connect(token, "polling"), await t.connect(token, "websocket")];
    expect(sample(await scrape(), "socketio_connected_sockets")).toBe(base + 2);
    for (const s of sockets) s.disconnect();
    for (let i = 0; i < 100 && sample(await scrape(), "socketio_connected_sockets") !== base; i++) await Bun.sleep(20);
    expect(sample(await scrape(), "socketio_connected_sockets")).toBe(base);
  });

  test("messages accepted and rejected, over sockets and REST, and the persist latency of each stored one", async () => {
    const { token } = await t.register();
    const socket = await t.connect(token, "websocket");
    const before = await scrape();
    expect((await sendWithAck(socket, { content: "counted" })).ok).toBe(true);
    expect((await sendWithAck(socket, { content: "" })).ok).toBe(false);
    expect((await sendWithAck(socket, { content: "x", channelId: 999_999 })).ok).toBe(false);
    const post = (body: string) => fetch(`${t.url}/api/messages`, { method: "POST", headers: { ...json, authorization: `Bearer ${token}` }, body });
    expect((await post(JSON.stringify({ content: "counted too" }))).status).toBe(201);
    expect((await post("{not json")).status).toBe(400);
    expect((await post(JSON.stringify({ content: 5 }))).status).toBe(400);
    socket.disconnect();
    const after = await scrape();
    const delta = (labels: Record<string, string>) => sample(after, "chat_messages_total", labels) - sample(before, "chat_messages_total", labels);
    expect(delta({ transport: "socket", result: "accepted" })).toBe(1);
    expect(delta({ transport: "socket", result: "rejected", code: "VALIDATION_FAILED" })).toBe(1);
    expect(delta({ transport: "socket", result: "rejected", code: "NOT_FOUND" })).toBe(1);
    expect(delta({ transport: "rest", result: "accepted" })).toBe(1);
    expect(delta({ transport: "rest", result: "rejected", code: "BAD_JSON" })).toBe(1);
    expect(delta({ transport: "rest", result: "rejected", code: "VALIDATION_FAILED" })).toBe(1);
    // Only stored messages have a persist time.
    expect(sample(after, "chat_message_persist_seconds_count") - sample(before, "chat_message_persist_seconds_count")).toBe(2);
    expect(sample(after, "chat_message_persist_seconds_sum")).toBeGreaterThan(sample(before, "chat_message_persist_seconds_sum"));
  });
});

describe("METRICS_TOKEN", () => {
  test.each([
    ["no Authorization header", undefined],
    ["a wrong token", "Bearer not-the-metrics-token-at-all"],
    ["the token without Bearer", metricsToken],
    ["a user's access token", "user"],
    ["the token with a suffix", `Bearer ${metricsToken}x`],
  ])("%s → 401 UNAUTHORIZED in the error shape, no figures", async (_label, header) => {
    let authorization = header;
    if (header === "user") authorization = `Bearer ${(await guarded.register()).token}`;
    const res = await fetch(`${guarded.url}/metrics`, { headers: authorization ? { authorization } : {} });
    await expectError(res, 401, "UNAUTHORIZED");
  });

  test("the right token → 200 with the figures", async () => {
    expect(await scrape(guarded, metricsToken)).toContain("# TYPE http_requests_total counter");
  });
});

describe("without METRICS_TOKEN", () => {
  /** A server with no METRICS_TOKEN (an empty value is unset) in `nodeEnv`, and what it logged. */
  async function tokenless(nodeEnv: string) {
    const lines: string[] = [];
    const server = await startTestServer({
      env: { NODE_ENV: nodeEnv, METRICS_TOKEN: "" },
      logger: createLogger("info", { write: (line: string) => void lines.push(line) }),
    });
    return { server, logged: () => lines.map((line) => JSON.parse(line) as { level: number; msg: string }) };
  }

  test.each(["production", "test"])("NODE_ENV=%s: /metrics is off (404 NOT_FOUND, no figures), and start-up says so", async (nodeEnv) => {
    const { server, logged } = await tokenless(nodeEnv);
    try {
      for (const authorization of [undefined, `Bearer ${testMetricsToken}`, "Bearer ", `Bearer ${(await server.register()).token}`]) {
        const res = await fetch(`${server.url}/metrics`, { headers: authorization ? { authorization } : {} });
        const body = await expectError(res, 404, "NOT_FOUND");
        expect(JSON.stringify(body)).not.toContain("http_requests_total");
      }
      expect(logged()).toContainEqual(expect.objectContaining({ level: 40, msg: expect.stringContaining("GET /metrics is off: set METRICS_TOKEN") }));
    } finally {
      await server.stop();
    }
  });

  test("NODE_ENV=development: /metrics is open, and start-up says so", async () => {
    const { server, logged } = await tokenless("development");
    try {
      expect(await scrape(server, undefined)).toContain("# TYPE http_requests_total counter");
      expect(logged()).toContainEqual(expect.objectContaining({ level: 30, msg: expect.stringContaining("GET /metrics is open") }));
    } finally {
      await server.stop();
    }
  });
});
