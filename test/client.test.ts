import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { hc } from "hono/client";
import { io, type Socket } from "socket.io-client";
import type { AppType, ChatMessage, ClientToServerEvents, ServerToClientEvents } from "../src/client.ts";
import { startTestServer, uniqueName } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §9: a TypeScript front end calls the API through `hono/client` typed by the server's
// own route types (src/client.ts), and types its socket with the server's event maps. This file
// is type-checked by `tsc` in CI, so a route or payload that drifts from the client breaks the build.

const t = await startTestServer();

describe("hono/client typed by AppType", () => {
  test("register, list users, post and read history, typed end to end", async () => {
    const anonymous = hc<AppType>(t.url);
    const username = uniqueName("typed");
    const registered = await anonymous.api.auth.register.$post({ json: { username, password: "correct horse battery" } });
    expect(registered.status).toBe(201);
    if (registered.status !== 201) throw new Error("unreachable");
    const { token, user } = await registered.json();
    expect(user.username).toBe(username);

    const client = hc<AppType>(t.url, { headers: { authorization: `Bearer ${token}` } });
    const me = await client.api.users.me.$get();
    expect(me.status).toBe(200);
    if (me.status === 200) expect((await me.json()).id).toBe(user.id);

    const sent = await client.api.messages.$post({ json: { content: "typed hello", clientId: crypto.randomUUID() } });
    expect(sent.status).toBe(201);
    const history = await client.api.messages.$get({ query: { limit: "5" } });
    expect(history.status).toBe(200);
    if (history.status === 200) {
      const entries = await history.json();
      const mine = entries.find((e) => "content" in e && e.content === "typed hello");
      expect(mine).toBeDefined();
    }

    // Errors come back typed too, in the §0 shape.
    const refused = await client.api.messages.$post({ json: { content: "" } });
    expect(refused.status).toBe(400);
    if (refused.status === 400) expect((await refused.json()).error.code).toBe("VALIDATION_FAILED");

    const search = await client.api.messages.search.$get({ query: { q: "typed" } });
    expect(search.status).toBe(200);
    if (search.status === 200) expect((await search.json()).map((h) => h.message.content)).toContain("typed hello");
  });
});

describe("a socket typed with the server's event maps", () => {
  test("emits `message` with an ack and receives the typed broadcast", async () => {
    const { token } = await t.register();
    const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(t.url, { auth: { token }, transports: ["websocket"] });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      });
      const received = new Promise<ChatMessage>((resolve) => socket.once("message", resolve));
      const ack = await socket.timeout(5_000).emitWithAck("message", { content: "typed socket" });
      expect(ack.ok).toBe(true);
      const broadcast = await received;
      expect(broadcast.content).toBe("typed socket");
      if (ack.ok) expect(ack.message).toEqual(broadcast);
    } finally {
      socket.disconnect();
    }
  });
});
