import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { hc } from "hono/client";
import { io, type Socket } from "socket.io-client";
import type { AppType, Channel, ChannelEvent, ChatMessage, ClientToServerEvents, EventsPage, LiveMessage, MessageUpdated, SentMessage, ServerToClientEvents } from "../src/client.ts";
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

type TypedSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** Resolves once `socket` is connected; rejects with its connect_error. */
function connected(socket: TypedSocket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
}

describe("the event log typed end to end (api.md §11)", () => {
  test("a channel's seq, GET /api/channels/:id/events, and a socket resuming with auth.since", async () => {
    const { token } = await t.register();
    const client = hc<AppType>(t.url, { headers: { authorization: `Bearer ${token}` } });
    const created = await client.api.channels.$post({ json: { name: uniqueName("log"), kind: "public" } });
    expect(created.status).toBe(201);
    if (created.status !== 201) throw new Error("unreachable");
    const channel: Channel = await created.json();
    expect(channel.seq).toBe(0);

    // The send answer carries the message's seq, as its broadcast will.
    const posted = await client.api.messages.$post({ json: { channelId: channel.id, content: "logged", clientId: crypto.randomUUID() } });
    expect(posted.status).toBe(201);
    if (posted.status !== 201) throw new Error("unreachable");
    const sent: SentMessage = await posted.json();
    expect("seq" in sent && sent.seq).toBe(1);
    const edited = await client.api.messages[":id"].$patch({ param: { id: String(sent.id) }, json: { content: "logged, edited" } });
    expect(edited.status).toBe(200);

    const listed = await client.api.channels.$get();
    expect(listed.status).toBe(200);
    if (listed.status === 200) expect((await listed.json()).find((c) => c.id === channel.id)?.seq).toBe(2);

    const res = await client.api.channels[":id"].events.$get({ param: { id: String(channel.id) }, query: { after: "0", limit: "10" } });
    expect(res.status).toBe(200);
    if (res.status !== 200) throw new Error("unreachable");
    const page: EventsPage = await res.json();
    expect({ head: page.head, limited: page.limited, events: page.events.map((e) => [e.seq, e.type]) }).toEqual({
      head: 2,
      limited: false,
      events: [
        [1, "message"],
        [2, "message:updated"],
      ],
    });
    const first: ChannelEvent = page.events[0]!;
    // `type` narrows `data` to that event's payload.
    if (first.type === "message") expect(first.data.content).toBe("logged, edited"); // the message as it is now
    else throw new Error(`expected a message event, got ${first.type}`);

    const refused = await client.api.channels[":id"].events.$get({ param: { id: String(channel.id) }, query: { after: "-1" } });
    expect(refused.status).toBe(400);

    // From seq 1: the edit is replayed before anything live, with its seq.
    const resumed: TypedSocket = io(t.url, { auth: { token, since: { [channel.id]: 1 } }, transports: ["websocket"], reconnection: false, forceNew: true });
    // From past the head (a seq from another database): not replayable, so `resync` with the head.
    const lost: TypedSocket = io(t.url, { auth: { token, since: { [channel.id]: 99 } }, transports: ["websocket"], reconnection: false, forceNew: true });
    try {
      const replayed = new Promise<MessageUpdated>((resolve) => resumed.once("message:updated", resolve));
      const resync = new Promise<{ channelId: number; head: number }>((resolve) => lost.once("resync", resolve));
      await Promise.all([connected(resumed), connected(lost)]);
      expect(await replayed).toEqual({ id: sent.id, channelId: channel.id, content: "logged, edited", editedAt: expect.any(String), seq: 2 });
      expect(await resync).toEqual({ channelId: channel.id, head: 2 });

      // Then live: the next event reaches both, typed as the log's `message` payload.
      const next = (socket: TypedSocket) => new Promise<LiveMessage>((resolve) => socket.once("message", resolve));
      const live = Promise.all([next(resumed), next(lost)]);
      const ack = await resumed.timeout(5_000).emitWithAck("message", { channelId: channel.id, content: "live after resume" });
      expect(ack.ok).toBe(true);
      for (const m of await live) expect({ content: m.content, seq: m.seq }).toEqual({ content: "live after resume", seq: 3 });
    } finally {
      resumed.disconnect();
      lost.disconnect();
    }
  });

  test("a malformed auth.since refuses the handshake with VALIDATION_FAILED, not Unauthorized", async () => {
    const { token } = await t.register();
    const socket: TypedSocket = io(t.url, { auth: { token, since: { general: "latest" } }, transports: ["websocket"], reconnection: false, forceNew: true });
    try {
      const error = await connected(socket).then(
        () => undefined,
        (e: Error & { data?: { error?: { code?: string } } }) => e,
      );
      expect(error?.message).toStartWith("Invalid auth.since");
      expect(error?.data?.error?.code).toBe("VALIDATION_FAILED");
    } finally {
      socket.disconnect();
    }
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
