import { describe, expect, setDefaultTimeout, spyOn, test } from "bun:test";
import type { Server as BunServer } from "bun";
import { Server as Engine } from "@socket.io/bun-engine";
import { Server as SocketServer } from "socket.io";
import { io as ioClient, type Socket as RawClient } from "socket.io-client";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { isMessage, record, type Recorded, type Recorder } from "./helpers/recorder.ts";
import { expectUntilMarker as untilMarker, markerContent } from "./helpers/markers.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, uniqueName, type ChatClient, type Registered, type TestServer } from "./helpers/server.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Native fan-out (src/realtime/native-fanout.ts): a broadcast to one room without exceptions is
// one Bun `server.publish` for every websocket client, while polling clients, clients in the
// middle of an upgrade and broadcasts with exceptions take socket.io's per-socket path. Every
// test checks both what the clients receive (exactly once, in order) and which path carried it.

type Publish = { topic: string; data: string };

/** A test server, the Bun server under it, and every `publish` that Bun server was asked for. */
interface Served {
  t: TestServer;
  bun: BunServer<unknown>;
  published: Publish[];
}

async function startServed(options: Parameters<typeof startTestServer>[0] = {}): Promise<Served> {
  // `serve()` calls Bun.serve once; catch what it returns (one start at a time, so no mix-up).
  const serveSpy = spyOn(Bun, "serve");
  let t: TestServer;
  let bun: BunServer<unknown>;
  try {
    t = await startTestServer(options);
    bun = serveSpy.mock.results.at(-1)!.value as BunServer<unknown>;
  } finally {
    serveSpy.mockRestore();
  }
  const published: Publish[] = [];
  const publish = bun.publish.bind(bun);
  // Called through: the clients still get what was published.
  bun.publish = (topic, data, compress) => {
    published.push({ topic, data: String(data) });
    return publish(topic, data, compress);
  };
  return { t, bun, published };
}

const one = await startServed();
const { t } = one;
const api = apiFor(t);

const GENERAL = 1;
/** The Bun topic of a channel's room in the default namespace, as native-fanout.ts names it. */
const channelTopic = (channelId: number) => `/\x1fchannel:${channelId}`;
/** What one publish of a `message` broadcast carries: Engine.IO "4" (message) + Socket.IO "2" (event). */
const publishedMessage = (message: ChatMessage) => `42${JSON.stringify(["message", message])}`;

/** Sockets opened by one test (on `t` unless another server is given), closed after it. */
const { connect, track } = socketTracker(t);

/**
 * A client that starts on polling and upgrades only when `upgrade()` is called, so the test
 * decides whether a room change or a broadcast happens before or after the upgrade.
 * (engine.io-client probes on its own only with `upgrade: true`; `_probe` is what it calls then.)
 */
async function connectUpgradable(server: TestServer, user: Registered) {
  const socket: ChatClient = track(ioClient(server.url, { auth: { token: user.token }, transports: ["polling", "websocket"], upgrade: false, reconnection: false, forceNew: true }));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("connect_error", reject);
  });
  const engine = socket.io.engine as unknown as { transport: { name: string }; _probe(name: string): void; once(event: "upgrade", listener: () => void): void };
  expect(engine.transport.name).toBe("polling");
  return {
    socket,
    async upgrade() {
      const upgraded = new Promise<void>((resolve) => engine.once("upgrade", resolve));
      engine._probe("websocket");
      await upgraded;
      expect(engine.transport.name).toBe("websocket");
      // The server side switches when the client's "upgrade" packet arrives: wait for that too.
      const conn = server.app.io.of("/").sockets.get(socket.id!)!.conn;
      for (let i = 0; conn.transport.name !== "websocket" && i < 250; i++) await Bun.sleep(10);
      expect(conn.transport.name).toBe("websocket");
    },
  };
}

/**
 * The `message` broadcasts the server wrote to this client one by one, through its Engine.IO
 * connection (socket.io's per-socket path), by message id. A client the native publish reached
 * gets none of these for that message.
 */
function perSocketMessages(server: TestServer, client: ChatClient): number[] {
  const serverSocket = server.app.io.of("/").sockets.get(client.id!);
  if (!serverSocket) throw new Error("no server-side socket for this client");
  const ids: number[] = [];
  serverSocket.conn.on("packetCreate", (packet: { type: string; data?: unknown }) => {
    if (packet.type === "message" && typeof packet.data === "string" && packet.data.startsWith('2["message",')) {
      ids.push((JSON.parse(packet.data.slice(1)) as [string, ChatMessage])[1].id);
    }
  });
  return ids;
}

async function createChannel(owner: Registered, server: TestServer = t): Promise<{ id: number }> {
  return expectStatus(await apiFor(server)("POST", "/api/channels", owner.token, { name: uniqueName("fan"), kind: "public" }), 201);
}

async function join(user: Registered, channelId: number, server: TestServer = t): Promise<void> {
  await expectStatus(await apiFor(server)("POST", `/api/channels/${channelId}/join`, user.token), 200);
}

async function sendIn(socket: ChatClient, channelId: number, content = `m ${crypto.randomUUID()}`): Promise<ChatMessage> {
  const ack = await sendWithAck(socket, { content, channelId });
  expect(ack).toMatchObject({ ok: true });
  return ack.message as ChatMessage;
}

/**
 * The marker technique (helpers/markers.ts), the marker sent by `sender` in `channelId`: anything
 * broadcast earlier (a duplicate, a message that should not have come) shows up before it.
 */
async function expectUntilMarker(sender: ChatClient, channelId: number, recorders: Recorder[], before: Recorded[][]): Promise<void> {
  await untilMarker(() => sendIn(sender, channelId, markerContent()), recorders, before);
}

const publishesOf = (served: Served, message: ChatMessage) => served.published.filter((p) => p.data === publishedMessage(message));

// ---------------------------------------------------------------------------------------

describe("websocket members", () => {
  test("a channel message is one native publish to the channel's topic; every websocket member gets it once, none through the per-socket path; non-members get nothing", async () => {
    const [alice, bob, carol, outsider] = await Promise.all([t.register(), t.register(), t.register(), t.register()]);
    const channel = await createChannel(alice);
    await join(bob, channel.id);
    await join(carol, channel.id);
    const sender = await connect(alice, "websocket");
    // bob has two websocket tabs: both are members.
    const members = [sender, await connect(bob, "websocket"), await connect(bob, "websocket"), await connect(carol, "websocket")];
    const outsiderSocket = await connect(outsider, "websocket");
    const perSocket = members.map((s) => perSocketMessages(t, s));
    const outsiderPerSocket = perSocketMessages(t, outsiderSocket);
    const recorders = members.map((s) => record(s));
    const outsiderRecorder = record(outsiderSocket);

    const message = await sendIn(sender, channel.id, "to every member");

    const once: Recorded[] = [["message", message]];
    await expectUntilMarker(sender, channel.id, recorders, members.map(() => once));
    // The outsider: nothing of the channel before a general marker.
    await expectUntilMarker(sender, GENERAL, [outsiderRecorder], [[]]);
    // One publish, to the channel's topic, of exactly the broadcast packet; no per-socket copy.
    expect(publishesOf(one, message)).toEqual([{ topic: channelTopic(channel.id), data: publishedMessage(message) }]);
    for (const ids of [...perSocket, outsiderPerSocket]) expect(ids).not.toContain(message.id);
  });

  test("a broadcast to the whole namespace (presence) is one publish to the namespace topic", async () => {
    const [watcher, newcomer] = [await t.register(), await t.register()];
    const watcherSocket = await connect(watcher, "websocket");
    const presence = new Promise<unknown>((resolve) => watcherSocket.on("presence", (p) => (p as { userId: number }).userId === newcomer.user.id && resolve(p)));
    await connect(newcomer, "websocket");
    expect(await presence).toEqual({ userId: newcomer.user.id, status: "online" });
    expect(one.published.filter((p) => p.data === `42${JSON.stringify(["presence", { userId: newcomer.user.id, status: "online" }])}`).map((p) => p.topic)).toEqual(["/"]);
  });
});

describe("polling and upgrading clients", () => {
  test("a polling-only member gets the message once, through the per-socket path, next to websocket members served by the publish", async () => {
    const [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
    const channel = await createChannel(alice);
    await join(bob, channel.id);
    await join(carol, channel.id);
    const sender = await connect(alice, "polling");
    const poller = await connect(bob, "polling");
    const websocket = await connect(carol, "websocket");
    const [pollerWrites, websocketWrites] = [perSocketMessages(t, poller), perSocketMessages(t, websocket)];
    const recorders = [record(sender), record(poller), record(websocket)];

    const message = await sendIn(sender, channel.id, "mixed transports");

    const once: Recorded[] = [["message", message]];
    await expectUntilMarker(sender, channel.id, recorders, [once, once, once]);
    expect(pollerWrites.filter((id) => id === message.id)).toHaveLength(1);
    expect(websocketWrites).not.toContain(message.id);
    expect(publishesOf(one, message)).toHaveLength(1);
  });

  test("a client that joins rooms on polling and then upgrades gets later messages once, through the publish (rooms joined before the upgrade included)", async () => {
    const [alice, bob] = [await t.register(), await t.register()];
    const before = await createChannel(alice);
    await join(bob, before.id);
    const sender = await connect(alice, "websocket");
    const upgradable = await connectUpgradable(t, bob);
    const writes = perSocketMessages(t, upgradable.socket);
    // Joined while still on polling: its rooms change before the websocket exists.
    const during = await createChannel(alice);
    let recorder = record(upgradable.socket);
    await join(bob, during.id);

    const onPolling = await sendIn(sender, before.id, "while polling");
    await expectUntilMarker(sender, before.id, [recorder], [[["channel:joined", { channelId: during.id }], ["message", onPolling]]]);
    expect(writes).toContain(onPolling.id);

    await upgradable.upgrade();

    for (const channel of [before, during, { id: GENERAL }]) {
      recorder = record(upgradable.socket);
      const upgraded = await sendIn(sender, channel.id, "after the upgrade");
      await expectUntilMarker(sender, channel.id, [recorder], [[["message", upgraded]]]);
      expect(writes).not.toContain(upgraded.id);
      expect(publishesOf(one, upgraded).map((p) => p.topic)).toEqual([channelTopic(channel.id)]);
    }
  });
});

describe("broadcasts with exceptions", () => {
  test("typing (to the channel except the sender's user room) reaches the other members only, none of the sender's tabs, and is never published", async () => {
    const [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
    const channel = await createChannel(alice);
    await join(bob, channel.id);
    const aliceTabs = [await connect(alice, "websocket"), await connect(alice, "websocket"), await connect(alice, "polling")];
    const bobTabs = [await connect(bob, "websocket"), await connect(bob, "polling")];
    const carolSocket = await connect(carol, "websocket");
    const recorders = [...aliceTabs, ...bobTabs].map((s) => record(s));
    const carolRecorder = record(carolSocket);
    const publishedBefore = one.published.length;

    const ack = await aliceTabs[0]!.timeout(5_000).emitWithAck("typing", { channelId: channel.id });
    expect(ack).toEqual({ ok: true });

    const typing: Recorded = ["typing", { channelId: channel.id, userId: alice.user.id }];
    await expectUntilMarker(aliceTabs[1]!, channel.id, recorders, [[], [], [], [typing], [typing]]);
    await expectUntilMarker(aliceTabs[1]!, GENERAL, [carolRecorder], [[]]);
    expect(one.published.slice(publishedBefore).filter((p) => p.data.includes('"typing"'))).toEqual([]);
  });
});

describe("membership", () => {
  test("joining subscribes the user's websocket tabs at once; leaving unsubscribes them, while the publish still reaches the remaining members", async () => {
    const [alice, dave] = [await t.register(), await t.register()];
    const channel = await createChannel(alice);
    const sender = await connect(alice, "websocket");
    const daveTabs = [await connect(dave, "websocket"), await connect(dave, "websocket")];

    let recorders = daveTabs.map((s) => record(s));
    await sendIn(sender, channel.id, "before dave joined");
    await expectUntilMarker(sender, GENERAL, recorders, [[], []]);

    // Each tab is told (channel:joined, channel:left) once its room changed.
    recorders = daveTabs.map((s) => record(s));
    await join(dave, channel.id);
    const inside = await sendIn(sender, channel.id, "dave is in");
    const joined: Recorded[] = [["channel:joined", { channelId: channel.id }], ["message", inside]];
    await expectUntilMarker(sender, channel.id, recorders, [joined, joined]);

    recorders = daveTabs.map((s) => record(s));
    await expectStatus(await api("POST", `/api/channels/${channel.id}/leave`, dave.token), 204);
    const senderRecorder = record(sender);
    const after = await sendIn(sender, channel.id, "dave left");
    const left: Recorded[] = [["channel:left", { channelId: channel.id }]];
    await expectUntilMarker(sender, GENERAL, recorders, [left, left]);
    // Published all the same (alice is still a member, and gets it once).
    expect(publishesOf(one, after).map((p) => p.topic)).toEqual([channelTopic(channel.id)]);
    expect(await senderRecorder.until(isMessage(after.id))).toEqual([["message", after]]);
  });

  test("a socket that leaves the namespace while its connection stays open gets no more packets of that namespace (its topics are dropped, the namespace's too)", async () => {
    const [alice, erin] = [await t.register(), await t.register()];
    const channel = await createChannel(alice);
    await join(erin, channel.id);
    // A namespace of this test only, so that the connection outlives erin's "/" socket.
    const aux = (t.app.io as unknown as SocketServer).of("/fanout-aux");
    const sender = await connect(alice, "websocket");
    const erinSocket = await connect(erin, "websocket");
    const auxSocket = track(erinSocket.io.socket("/fanout-aux"));
    await new Promise<void>((resolve) => (auxSocket.connected ? resolve() : auxSocket.once("connect", () => resolve())));
    // Every Socket.IO packet erin's connection carries, as text (its engine is shared by both namespaces).
    const raw: string[] = [];
    erinSocket.io.engine.on("message", (data) => raw.push(String(data)));

    const leftNamespace = new Promise<void>((resolve) => erinSocket.once("disconnect", () => resolve()));
    t.app.io.of("/").sockets.get(erinSocket.id!)!.disconnect();
    await leftNamespace;
    expect(erinSocket.io.engine.readyState).toBe("open");
    raw.length = 0;

    const inChannel = await sendIn(sender, channel.id, "erin has left the namespace");
    const inGeneral = await sendIn(sender, GENERAL, "and general too");
    // Both went out as publishes (alice is still subscribed).
    expect(publishesOf(one, inChannel)).toHaveLength(1);
    expect(publishesOf(one, inGeneral)).toHaveLength(1);
    // A packet on the aux namespace comes after anything already sent on this connection.
    const auxMarker = new Promise<void>((resolve) => auxSocket.once("aux-marker", () => resolve()));
    for (const s of aux.sockets.values()) s.emit("aux-marker");
    await auxMarker;
    expect(raw).toEqual(['2/fanout-aux,["aux-marker"]']);
  });
});

describe("left to socket.io's own path", () => {
  test("a broadcast with a binary attachment, and a volatile one, reach every member once without a publish", async () => {
    const [alice, bob] = [await t.register(), await t.register()];
    const channel = await createChannel(alice);
    await join(bob, channel.id);
    const sockets = [await connect(alice, "websocket"), await connect(bob, "websocket"), await connect(bob, "polling")];
    const received = sockets.map(() => [] as unknown[]);
    sockets.forEach((s, i) => (s as unknown as RawClient).on("probe", (value: unknown) => received[i]!.push(value)));
    const recorders = sockets.map((s) => record(s));
    const publishedBefore = one.published.length;
    // Events of the test's own, emitted by the server as the app would (the app sends no binary).
    const io = t.app.io as unknown as SocketServer;
    const room = `channel:${channel.id}`;
    io.to(room).emit("probe", { bytes: Buffer.from([1, 2, 3]) });
    io.volatile.to(room).emit("probe", "volatile");

    const binary = { bytes: Buffer.from([1, 2, 3]) };
    const seen: Recorded[] = [["probe", binary], ["probe", "volatile"]];
    // Socket.IO drops a volatile packet for a transport that is not writable at that moment, as
    // the polling one is right after the binary packet went out: on polling, the binary one only.
    await expectUntilMarker(sockets[0]!, channel.id, recorders, [seen, seen, seen.slice(0, 1)]);
    expect(received).toEqual([[binary, "volatile"], [binary, "volatile"], [binary]]);
    expect(one.published.slice(publishedBefore).filter((p) => p.data.includes('"probe"'))).toEqual([]);
  });
});

describe("order", () => {
  test.each(["websocket", "polling"] as const)("on %s, the sender gets its message's broadcast before its ack, as without native fan-out", async (transport) => {
    const alice = await t.register();
    const sender = await connect(alice, transport);
    const recorder = record(sender);
    for (let i = 0; i < 20; i++) {
      const ack = await sendWithAck(sender, { content: `ordered ${i}` });
      expect(ack).toMatchObject({ ok: true });
      // The ack callback runs when the ack arrives: the broadcast must be there already.
      expect(recorder.events.at(-1)).toEqual(["message", ack.message]);
    }
  });

  test("200 messages from 5 senders in one channel arrive at every client once, in id order (websocket, polling, upgraded)", async () => {
    const users = await Promise.all(Array.from({ length: 8 }, () => t.register()));
    const channel = await createChannel(users[0]!);
    for (const user of users.slice(1)) await join(user, channel.id);
    const senders = await Promise.all(users.slice(0, 5).map((u, i) => connect(u, i % 2 ? "polling" : "websocket")));
    const upgradable = await connectUpgradable(t, users[7]!);
    await upgradable.upgrade();
    const receivers = [...senders, await connect(users[5]!, "websocket"), await connect(users[6]!, "polling"), upgradable.socket];
    const got: number[][] = receivers.map(() => []);
    receivers.forEach((s, i) => s.on("message", (m: ChatMessage) => m.channelId === channel.id && got[i]!.push(m.id)));

    const acked = await Promise.all(
      senders.map(async (s, k) => {
        const ids: number[] = [];
        for (let j = 0; j < 40; j++) ids.push((await sendIn(s, channel.id, `order ${k}-${j}`)).id);
        return ids;
      }),
    );
    const expected = acked.flat().sort((x, y) => x - y);
    expect(expected).toHaveLength(200);
    const deadline = Date.now() + 5_000;
    while (got.some((g) => g.length < 200) && Date.now() < deadline) await Bun.sleep(20);
    for (const g of got) expect(g).toEqual(expected);
  });
});

describe("with Redis", () => {
  const prefix = `test:${crypto.randomUUID().slice(0, 8)}:fanout:`;

  test("a message sent on instance A reaches websocket clients on B once, through B's publish; B's polling client through its per-socket path", async () => {
    const a = await startServed({ redisPrefix: prefix });
    const b = await startServed({ redisPrefix: prefix, database: a.t.database });
    const [alice, bob, carol] = [await a.t.register(), await b.t.register(), await b.t.register()];
    const channel = await createChannel(alice, a.t);
    await join(bob, channel.id, b.t);
    await join(carol, channel.id, b.t);
    const sender = await connect(alice, "websocket", a.t);
    const onB = [await connect(bob, "websocket", b.t), await connect(bob, "websocket", b.t), await connect(carol, "polling", b.t)];
    const writes = onB.map((s) => perSocketMessages(b.t, s));
    const recorders = onB.map((s) => record(s));

    const message = await sendIn(sender, channel.id, "across instances");

    const once: Recorded[] = [["message", message]];
    await expectUntilMarker(sender, channel.id, recorders, [once, once, once]);
    expect(publishesOf(b, message)).toEqual([{ topic: channelTopic(channel.id), data: publishedMessage(message) }]);
    expect(publishesOf(a, message)).toEqual([{ topic: channelTopic(channel.id), data: publishedMessage(message) }]);
    expect(writes.map((ids) => ids.filter((id) => id === message.id).length)).toEqual([0, 0, 1]);
  });
});

describe("a Socket.IO server served without native fan-out", () => {
  test("keeps socket.io's own path: its broadcasts still arrive once, and its Bun server publishes nothing", async () => {
    // Adapter.prototype is patched for the whole process by the servers above; this one is not registered.
    const io = new SocketServer();
    const engine = new Engine({ path: "/socket.io/" });
    io.bind(engine);
    const bun = Bun.serve({ port: 0, hostname: "127.0.0.1", websocket: engine.handler().websocket, fetch: (request, server) => engine.handleRequest(request, server) });
    const publish = spyOn(bun, "publish");
    io.on("connection", (socket) => void socket.join("room"));
    try {
      const clients = await Promise.all(
        (["websocket", "polling"] as const).map(
          (transport) =>
            new Promise<RawClient>((resolve, reject) => {
              const socket = track(ioClient(`http://127.0.0.1:${bun.port}`, { transports: [transport], reconnection: false, forceNew: true }));
              socket.once("connect", () => resolve(socket));
              socket.once("connect_error", reject);
            }),
        ),
      );
      const received = clients.map(() => [] as unknown[]);
      clients.forEach((c, i) => c.on("hello", (n: unknown) => received[i]!.push(n)));
      // Joined in the connection handler: wait until both are in the room.
      for (let i = 0; (io.of("/").adapter.rooms.get("room")?.size ?? 0) < 2 && i < 100; i++) await Bun.sleep(10);
      io.to("room").emit("hello", 1);
      io.emit("hello", 2);
      const done = clients.map((c) => new Promise<void>((resolve) => c.on("done", () => resolve())));
      for (const s of io.of("/").sockets.values()) s.emit("done");
      await Promise.all(done);
      expect(received).toEqual([
        [1, 2],
        [1, 2],
      ]);
      expect(publish).not.toHaveBeenCalled();
    } finally {
      await io.close();
      await bun.stop(true);
    }
  });
});
