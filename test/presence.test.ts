import { afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { sign } from "hono/jwt";
import { io as ioClient } from "socket.io-client";
import { expectError } from "./helpers/expect-error.ts";
import { record, recordWithPresence, type Recorded, type Recorder } from "./helpers/recorder.ts";
import { expectUntilMarker as untilMarker, markerContent } from "./helpers/markers.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, testJwtSecret, uniqueName, type ChatClient, type Json, type Registered, type TestServer, type Transport } from "./helpers/server.ts";
import { now } from "./helpers/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §8 presence (`presence` events counted per user, GET /api/presence) and typing
// (`typing` relayed to the channel's other members, throttled per user and channel), with §3's
// ack/`<event>:error` conventions, §7's server-side cuts (logout-all, ban) and §0's error shape.
//
// Absences are proven with markers, never with sleeps: after the act, a message is posted in
// general (every user is in it); one connection delivers in emission order, so anything sent
// by the act would be recorded before the marker.

const ADMIN_NAME = "presence_admin";
const t = await startTestServer({ env: { ADMIN_USERNAMES: ADMIN_NAME } });
/** A second server whose typing throttle window is short enough to wait out (1 per second). */
const fast = await startTestServer({ env: { RATE_LIMIT_TYPING: "1/1s" } });

const GENERAL = 1;
const UNKNOWN_CHANNEL = 2_000_000_000;
const password = "correct horse battery";

type ErrorBody = { code: string; message: string; details?: { path: string; message: string }[] };
type TypingAck = { ok: true } | { ok: false; error: ErrorBody };
type Channel = { id: number; name: string; kind: "public" | "private" | "direct" };

/** The socket without the typed contract, for payloads the contract would not let a client send. */
type LooseSocket = {
  emit(event: string, ...args: unknown[]): unknown;
  timeout(ms: number): { emitWithAck(event: string, ...args: unknown[]): Promise<unknown> };
};
const loose = (socket: ChatClient) => socket as unknown as LooseSocket;

// ---------------------------------------------------------------------------------------
// Sockets

/** Sockets opened by one test, closed after it; the servers are then left with none at all. */
const { track } = socketTracker();
afterEach(async () => {
  // After the tracker's hook has closed them (hooks run in the order registered): the next test's
  // recordings start from a quiet server, no offline event of this test arrives late.
  await Promise.all([t, fast].map((server) => allClosed(server)));
});

/** Waits until the server holds no socket (of `userId`, if given): a readiness wait, not a proof. */
async function allClosed(server: TestServer, userId?: number): Promise<void> {
  const sockets = server.app.io.of("/").sockets;
  const left = () => [...sockets.values()].filter((s) => userId === undefined || s.data.user?.id === userId).length;
  const deadline = Date.now() + 5_000;
  while (left() > 0) {
    if (Date.now() > deadline) throw new Error(`${left()} server-side sockets still open`);
    await Bun.sleep(5);
  }
}

/** A socket.io client not yet connected (no reconnection), closed after the test. */
function open(token: string | undefined, transport: Transport, server: TestServer = t): ChatClient {
  const socket: ChatClient = ioClient(server.url, {
    auth: token === undefined ? {} : { token },
    transports: [transport],
    reconnection: false,
    forceNew: true,
  });
  return track(socket);
}

function connected(socket: ChatClient): Promise<ChatClient> {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

async function connect(user: Registered, transport: Transport, server: TestServer = t): Promise<ChatClient> {
  return connected(open(user.token, transport, server));
}

/** A connected socket whose recorder (presence included) was listening before the handshake began. */
async function connectRecorded(user: Registered, transport: Transport, server: TestServer = t): Promise<{ socket: ChatClient; rec: Recorder }> {
  const socket = open(user.token, transport, server);
  const rec = recordWithPresence(socket);
  await connected(socket);
  return { socket, rec };
}

/** Two tabs of one user: one socket per transport. */
const tabs = (user: Registered, server: TestServer = t) => Promise.all([connect(user, "polling", server), connect(user, "websocket", server)]);

/** Resolves once the server has handled `socket`'s disconnection (its own `disconnect` handlers ran first). */
function closedOnServer(socket: ChatClient, server: TestServer = t): Promise<void> {
  const serverSocket = server.app.io.of("/").sockets.get(socket.id ?? "");
  if (!serverSocket) throw new Error("no such server-side socket");
  return new Promise((resolve) => serverSocket.once("disconnect", () => resolve()));
}

/** Closes `socket` from the client and waits until the server has seen it go. */
async function close(socket: ChatClient, server: TestServer = t): Promise<void> {
  const gone = closedOnServer(socket, server);
  socket.disconnect();
  await gone;
}

/** Resolves with the disconnect reason; rejects after `ms`. */
function disconnected(socket: ChatClient, ms = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket not disconnected within ${ms} ms`)), ms);
    socket.once("disconnect", (reason) => {
      clearTimeout(timer);
      resolve(reason);
    });
  });
}

// ---------------------------------------------------------------------------------------
// Handshake hook: holds a user's next handshake after the server has authenticated it and read
// its channels, and before the socket is connected (as in channels.test.ts).

type HeldSocket = { conn: { once(event: "close", listener: () => void): void } };
const gates = new Map<number, { reached: (socket: HeldSocket) => void; released: Promise<void> }>();
t.app.io.use(async (socket, next) => {
  const gate = gates.get(socket.data.user.id);
  if (gate) {
    gate.reached(socket);
    await gate.released;
  }
  next();
});

/** Holds `user`'s next handshake; `reached` resolves with its server side once held. */
function holdHandshake(user: Registered) {
  let reached!: (socket: HeldSocket) => void;
  let release!: () => void;
  const reachedP = new Promise<HeldSocket>((resolve) => (reached = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  gates.set(user.user.id, { reached, released });
  return {
    reached: reachedP,
    release() {
      gates.delete(user.user.id);
      release();
    },
  };
}

// ---------------------------------------------------------------------------------------
// REST

const api = (method: string, path: string, token: string | undefined, body?: unknown, server: TestServer = t) => apiFor(server)(method, path, token, body);

/** GET /api/presence: 200, JSON, an ascending array of integer ids. */
async function online(asUser: Registered, server: TestServer = t): Promise<number[]> {
  const res = await api("GET", "/api/presence", asUser.token, undefined, server);
  expect(res.headers.get("content-type") ?? "").toMatch(/^application\/json\b/);
  const ids: unknown = await expectStatus(res, 200);
  expect(Array.isArray(ids)).toBe(true);
  for (const id of ids as unknown[]) expect(Number.isInteger(id)).toBe(true);
  expect(ids).toEqual([...(ids as number[])].sort((a, b) => a - b));
  return ids as number[];
}

const ascending = (...users: Registered[]) => users.map((u) => u.user.id).sort((a, b) => a - b);

async function createChannel(owner: Registered, kind: "public" | "private", server: TestServer = t): Promise<Channel> {
  return expectStatus(await api("POST", "/api/channels", owner.token, { name: uniqueName(kind), kind }, server), 201);
}

async function join(user: Registered, channelId: number, server: TestServer = t): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/join`, user.token, undefined, server), 200);
}

async function leave(user: Registered, channelId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/leave`, user.token), 204);
}

async function addMember(actor: Registered, channelId: number, userId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/members`, actor.token, { userId }), 200);
}

async function direct(user: Registered, other: Registered): Promise<Channel> {
  const res = await api("POST", `/api/direct/${other.user.id}`, user.token);
  expect([200, 201]).toContain(res.status);
  return res.json() as Promise<Channel>;
}

/** A new session of `user` (its own sid), as a second login would make. */
async function login(user: Registered): Promise<Registered> {
  const body = await expectStatus(await api("POST", "/api/auth/login", undefined, { username: user.user.username, password }), 200);
  return { ...user, token: body.token, refreshToken: body.refreshToken };
}

async function messageCount(server: TestServer = t): Promise<number> {
  const [row] = await server.database.sql`SELECT count(*)::int AS n FROM messages`;
  return (row as { n: number }).n;
}

// ---------------------------------------------------------------------------------------
// Markers and event shapes

const markerBots = new Map<TestServer, Registered>([
  [t, await t.register(uniqueName("marker"))],
  [fast, await fast.register(uniqueName("marker"))],
]);

/** The marker technique (helpers/markers.ts), the marker posted in general by `server`'s marker bot. */
async function expectUntilMarker(recorders: Recorder[], before: Recorded[][] = [], server: TestServer = t): Promise<void> {
  await untilMarker(
    async () => expectStatus(await api("POST", "/api/messages", markerBots.get(server)!.token, { content: markerContent(), channelId: GENERAL }, server), 201),
    recorders,
    before,
  );
}

const isPresence = (userId: number, status: "online" | "offline") => ([event, payload]: Recorded) =>
  event === "presence" && (payload as { userId: number }).userId === userId && (payload as { status: string }).status === status;

const onlineEvent = (user: Registered): Recorded => ["presence", { userId: user.user.id, status: "online" }];
const offlineEvent = (user: Registered): Recorded => ["presence", { userId: user.user.id, status: "offline" }];
const typingEvent = (channelId: number, user: Registered): Recorded => ["typing", { channelId, userId: user.user.id }];
/** What each socket of a user whose membership changed is told (api.md §8). */
const joinedEvent = (channelId: number): Recorded => ["channel:joined", { channelId }];
const leftEvent = (channelId: number): Recorded => ["channel:left", { channelId }];

/** Emits `typing` with an ack callback; resolves with the ack. */
function typeWithAck(socket: ChatClient, ...args: unknown[]): Promise<TypingAck> {
  return loose(socket).timeout(5_000).emitWithAck("typing", ...args) as Promise<TypingAck>;
}

async function expectTypingOk(socket: ChatClient, channelId: number): Promise<void> {
  const ack = await typeWithAck(socket, { channelId });
  expect(ack).toStrictEqual({ ok: true });
}

/** A refusal ack: exactly `{ ok: false, error: { code, message, details? } }`, details naming `path` if given. */
function expectRefusal(ack: unknown, code: string, path?: string): ErrorBody {
  expect(ack).toEqual({ ok: false, error: expect.objectContaining({ code }) });
  expect(Object.keys(ack as object).sort()).toEqual(["error", "ok"]);
  return expectErrorBody((ack as { error: ErrorBody }).error, code, path);
}

function expectErrorBody(error: ErrorBody, code: string, path?: string): ErrorBody {
  expect(error.code).toBe(code);
  for (const key of Object.keys(error)) expect(["code", "message", "details"]).toContain(key);
  expect(typeof error.message).toBe("string");
  expect(error.message.length).toBeGreaterThan(0);
  expect(JSON.stringify(error)).not.toMatch(/\bat \S+ \(|\.ts:\d+|\/work\/|node_modules|stack|Error:|Prisma/i);
  if (path !== undefined) {
    expect(error.details?.length ?? 0).toBeGreaterThan(0);
    for (const detail of error.details ?? []) expect(detail).toStrictEqual({ path, message: expect.any(String) });
  } else if (error.details !== undefined) {
    for (const detail of error.details) expect(Object.keys(detail).sort()).toEqual(["message", "path"]);
  }
  return error;
}

// ---------------------------------------------------------------------------------------
// Users

// Shared by the tests that only connect and disconnect: every test ends with every socket closed
// on the server (afterEach), so none inherits another's presence. Registered one after another,
// so their ids ascend in this order. Tests that end a session or ban a user register their own.
const [p0, p1, p2] = [await t.register(), await t.register(), await t.register()];

/** A second session of p0, logged out: its access token is well-formed, signed, and revoked. */
const revokedSession = await login(p0);
await expectStatus(await api("POST", "/api/auth/logout", undefined, { refreshToken: revokedSession.refreshToken }), 204);

const admin = await t.register(ADMIN_NAME);
const moderator = await t.register(uniqueName("moderator"));
await expectStatus(await api("PATCH", `/api/users/${moderator.user.id}`, admin.token, { role: "moderator" }), 200);

// Typing: shared users, and a fresh channel per test, since the throttle is per user and channel.
const [alice, bob, carol, dave] = [await t.register(), await t.register(), await t.register(), await t.register()];
const [fastAlice, fastBob] = [await fast.register(), await fast.register()];

const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
const otherSecret = "another-secret-that-is-at-least-32-characters";

// =======================================================================================
// 1. Presence events

describe("presence events", () => {
  test.each([
    ["websocket", "polling"],
    ["polling", "websocket"],
  ] as [Transport, Transport][])(
    "first tab (%s) → online to every connected socket; second tab (%s) → nothing; closing one of two → nothing; closing the last → offline once",
    async (first, second) => {
      // The subject has the lowest id and connects last: a list in connection order would not be ascending.
      const [subject, o1, o2] = [p0, p1, p2];
      const obs1 = await connectRecorded(o1, "polling");
      const obs2 = await connectRecorded(o2, "websocket");
      expect(await online(o1)).toEqual(ascending(o1, o2));

      const tab1 = await connectRecorded(subject, first);
      const tab2 = await connectRecorded(subject, second);
      expect(await online(o1)).toEqual(ascending(o1, o2, subject));
      expect(await online(subject)).toEqual(ascending(o1, o2, subject));
      // Each socket saw, from its own handshake on, every user who came online after it (itself included), once.
      await expectUntilMarker(
        [obs1.rec, obs2.rec, tab1.rec, tab2.rec],
        [[onlineEvent(o1), onlineEvent(o2), onlineEvent(subject)], [onlineEvent(o2), onlineEvent(subject)], [onlineEvent(subject)], []],
      );

      // One of two tabs closes: still online, and nobody hears of it.
      let recs = [obs1, obs2, tab1].map(({ socket }) => recordWithPresence(socket));
      await close(tab2.socket);
      expect(await online(o2)).toEqual(ascending(o1, o2, subject));
      await expectUntilMarker(recs);

      // The last tab closes: offline, once, to every remaining socket.
      recs = [obs1, obs2].map(({ socket }) => recordWithPresence(socket));
      await close(tab1.socket);
      expect(await online(o1)).toEqual(ascending(o1, o2));
      await expectUntilMarker(recs, [[offlineEvent(subject)], [offlineEvent(subject)]]);
    },
  );

  test("a user who comes back after going offline is announced online again", async () => {
    const obs = await connectRecorded(p1, "websocket");
    await close(await connect(p0, "polling"));
    await connect(p0, "websocket");
    expect(await online(p1)).toEqual(ascending(p0, p1));
    await expectUntilMarker([obs.rec], [[onlineEvent(p1), onlineEvent(p0), offlineEvent(p0), onlineEvent(p0)]]);
  });

  test("two sessions, one tab each: ending one session (logout) cuts its tab without an event; ending the other → offline", async () => {
    const subject = await t.register();
    const other = await login(subject);
    const obs = await connectRecorded(p1, "polling");
    const a = await connect(subject, "websocket");
    const b = await connect(other, "polling");
    await obs.rec.until(isPresence(subject.user.id, "online"));

    const rec = recordWithPresence(obs.socket);
    const cutA = disconnected(a);
    await expectStatus(await api("POST", "/api/auth/logout", undefined, { refreshToken: subject.refreshToken }), 204);
    expect(await cutA).toBe("io server disconnect");
    expect(b.connected).toBe(true);
    expect(await online(p1)).toEqual(ascending(p1, subject));
    await expectUntilMarker([rec]);

    const rec2 = recordWithPresence(obs.socket);
    const cutB = disconnected(b);
    await expectStatus(await api("POST", "/api/auth/logout", undefined, { refreshToken: other.refreshToken }), 204);
    expect(await cutB).toBe("io server disconnect");
    expect(await online(p1)).toEqual(ascending(p1));
    await expectUntilMarker([rec2], [[offlineEvent(subject)]]);
  });
});

// =======================================================================================
// 2. Sockets cut by the server

describe("sockets cut by the server", () => {
  test("POST /api/auth/logout-all: every tab of every session cut → offline once; the user leaves GET /api/presence at once", async () => {
    const subject = await t.register();
    const second = await login(subject);
    const obs = await connectRecorded(p1, "websocket");
    const sockets = [await connect(subject, "polling"), await connect(subject, "websocket"), await connect(second, "polling"), await connect(second, "websocket")];
    await obs.rec.until(isPresence(subject.user.id, "online"));
    expect(await online(p1)).toEqual(ascending(p1, subject));

    const rec = recordWithPresence(obs.socket);
    const cut = sockets.map((s) => disconnected(s));
    await expectStatus(await api("POST", "/api/auth/logout-all", second.token), 204);
    // "At once": the sockets are out of the count by the time the 204 is sent.
    expect(await online(p1)).toEqual(ascending(p1));
    expect(await Promise.all(cut)).toEqual(sockets.map(() => "io server disconnect"));
    expect(await online(p1)).toEqual(ascending(p1));
    await expectUntilMarker([rec], [[offlineEvent(subject)]]);
  });

  test.each(["admin", "moderator"] as const)("a ban by a %s: the banned user's tabs cut → offline once, out of GET /api/presence at once", async (by) => {
    const actor = by === "admin" ? admin : moderator;
    const subject = await t.register();
    const obs = await connectRecorded(p1, "polling");
    const actorSocket = await connectRecorded(actor, "websocket");
    const sockets = [await connect(subject, "polling"), await connect(subject, "websocket")];
    await obs.rec.until(isPresence(subject.user.id, "online"));
    await actorSocket.rec.until(isPresence(subject.user.id, "online"));

    const recs = [obs, actorSocket].map(({ socket }) => recordWithPresence(socket));
    const cut = sockets.map((s) => disconnected(s));
    await expectStatus(await api("POST", `/api/users/${subject.user.id}/ban`, actor.token, { reason: "presence test" }), 200);
    expect(await online(p1)).toEqual(ascending(p1, actor));
    expect(await Promise.all(cut)).toEqual(["io server disconnect", "io server disconnect"]);
    await expectUntilMarker(recs, [[offlineEvent(subject)], [offlineEvent(subject)]]);
  });
});

// =======================================================================================
// 3. Refused and abandoned handshakes

describe("handshakes that never connect", () => {
  let bannedToken: string;
  beforeAll(async () => {
    const banned = await t.register();
    await expectStatus(await api("POST", `/api/users/${banned.user.id}/ban`, admin.token, {}), 200);
    bannedToken = banned.token;
  });

  const badTokens: [string, () => Promise<string | undefined>][] = [
    ["no token", async () => undefined],
    ["not a JWT", async () => "not-a-jwt"],
    ["a user's own claims signed with another secret", () => sign(claimsOf(p0.token), otherSecret, "HS256")],
    ["a user's own claims, expired", () => sign({ ...claimsOf(p0.token), iat: now() - 120, exp: now() - 60 }, testJwtSecret, "HS256")],
    ["the token of a session that was logged out", async () => revokedSession.token],
    ["the token of a banned user", async () => bannedToken],
  ];

  test.each(badTokens.flatMap(([name, make]) => (["polling", "websocket"] as Transport[]).map((transport) => [name, transport, make] as const)))(
    "%s (%s): connect_error 'Unauthorized', no presence event, not listed",
    async (_name, transport, make) => {
      const obs = await connectRecorded(p1, transport === "polling" ? "websocket" : "polling");
      const error = await connected(open(await make(), transport)).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(error?.message).toBe("Unauthorized");
      expect(await online(p1)).toEqual(ascending(p1));
      await expectUntilMarker([obs.rec], [[onlineEvent(p1)]]);
    },
  );

  test.each(["polling", "websocket"] as Transport[])("a handshake the client abandons before it completes (%s) is never counted", async (transport) => {
    const obs = await connectRecorded(p1, "websocket");
    const gate = holdHandshake(p0);
    const socket = open(p0.token, transport);
    const serverSide = await gate.reached;
    const connClosed = new Promise<void>((resolve) => serverSide.conn.once("close", () => resolve()));
    socket.disconnect();
    await connClosed;
    gate.release();
    // A later tab of the same user is announced once, and its close takes the user offline:
    // the abandoned handshake left no count behind.
    const later = await connect(p0, transport);
    expect(await online(p1)).toEqual(ascending(p0, p1));
    await close(later);
    expect(await online(p1)).toEqual(ascending(p1));
    await expectUntilMarker([obs.rec], [[onlineEvent(p1), onlineEvent(p0), offlineEvent(p0)]]);
  });

  test("a session ended while its socket's handshake is under way: the socket is cut and never announced", async () => {
    const subject = await t.register();
    const obs = await connectRecorded(p1, "polling");
    const gate = holdHandshake(subject);
    const socket = open(subject.token, "websocket");
    const outcome = new Promise<string>((resolve) => {
      socket.once("connect_error", (e) => resolve(`connect_error ${e.message}`));
      socket.once("disconnect", (reason) => resolve(`disconnect ${reason}`));
    });
    await gate.reached;
    await expectStatus(await api("POST", "/api/auth/logout-all", subject.token), 204);
    gate.release();
    // Either refused at the handshake or connected and cut at once; never left connected.
    expect(["connect_error Unauthorized", "disconnect io server disconnect"]).toContain(await outcome);
    await allClosed(t, subject.user.id);
    expect(await online(p1)).toEqual(ascending(p1));
    // A socket counts only once its session is re-checked after connecting: the observer hears nothing of it.
    await expectUntilMarker([obs.rec], [[onlineEvent(p1)]]);
  });
});

// =======================================================================================
// 4. Many sockets of one user at once

describe("many sockets of one user at once", () => {
  const many = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => connect(p0, i % 2 ? "polling" : "websocket")));
  const closeAll = async (sockets: ChatClient[]) => {
    const gone = sockets.map((s) => closedOnServer(s));
    for (const socket of sockets) socket.disconnect();
    await Promise.all(gone);
  };

  test("10 tabs opened at once and closed at once: one online and one offline event, then not listed", async () => {
    const obs = await connectRecorded(p1, "polling");
    const sockets = await many(10);
    expect(await online(p1)).toEqual(ascending(p0, p1));
    await closeAll(sockets);
    expect(await online(p1)).toEqual(ascending(p1));
    await expectUntilMarker([obs.rec], [[onlineEvent(p1), onlineEvent(p0), offlineEvent(p0)]]);
  });

  test("churn: 10 tabs, then 5 closed while 5 more open, then all closed: still one online and one offline", async () => {
    const obs = await connectRecorded(p1, "websocket");
    const first = await many(10);
    const [closing, staying] = [first.slice(0, 5), first.slice(5)];
    const [more] = await Promise.all([many(5), closeAll(closing)]);
    expect(await online(p1)).toEqual(ascending(p0, p1));
    await closeAll([...staying, ...more]);
    expect(await online(p1)).toEqual(ascending(p1));
    await expectUntilMarker([obs.rec], [[onlineEvent(p1), onlineEvent(p0), offlineEvent(p0)]]);
  });
});

// =======================================================================================
// 5. GET /api/presence

describe("GET /api/presence", () => {
  test("200 with the online ids as ascending integers; the caller need not be connected; two tabs listed once", async () => {
    expect(await online(p0)).toEqual([]);
    await connect(p2, "websocket");
    await tabs(p0);
    await connect(p1, "polling");
    expect(await online(p1)).toEqual(ascending(p0, p1, p2));
  });

  const badAuth: [string, () => Promise<Record<string, string>>][] = [
    ["no Authorization header", async () => ({})],
    ["an empty bearer token", async () => ({ authorization: "Bearer " })],
    ["not a JWT", async () => ({ authorization: "Bearer not-a-jwt" })],
    ["another scheme", async () => ({ authorization: `Basic ${Buffer.from(`${p0.user.username}:${password}`).toString("base64")}` })],
    ["a user's own claims signed with another secret", async () => ({ authorization: `Bearer ${await sign(claimsOf(p0.token), otherSecret, "HS256")}` })],
    ["a user's own claims, expired", async () => ({ authorization: `Bearer ${await sign({ ...claimsOf(p0.token), iat: now() - 120, exp: now() - 60 }, testJwtSecret, "HS256")}` })],
    ["the token of a session that was logged out", async () => ({ authorization: `Bearer ${revokedSession.token}` })],
  ];
  test.each(badAuth)("401 UNAUTHORIZED in the error shape with %s", async (_name, headers) => {
    await expectError(await fetch(`${t.url}/api/presence`, { headers: await headers() }), 401, "UNAUTHORIZED");
  });
});

// =======================================================================================
// 6. Typing: relay

describe("typing relay", () => {
  // Each row's sender types in general once: two different senders, so the throttle never drops one.
  test.each([
    ["polling", "alice"],
    ["websocket", "bob"],
  ] as const)(
    "sent from %s (by %s): ack exactly { ok: true }; relayed { channelId, userId } to the other members' tabs only (public, private, direct, general)",
    async (senderTransport, senderName) => {
      const [sender, member] = senderName === "alice" ? [alice, bob] : [bob, alice];
      const pub = await createChannel(sender, "public");
      await join(member, pub.id);
      const priv = await createChannel(sender, "private");
      await addMember(sender, priv.id, member.user.id);
      const dm = await direct(sender, member);
      // carol is in general only: not joined to pub, not invited to priv, not in the direct channel.
      const senderTabs = await tabs(sender);
      const [memberTabs, carolTabs] = [await tabs(member), await tabs(carol)];
      const senderSocket = senderTabs[senderTransport === "polling" ? 0 : 1];
      const recs = [...senderTabs, ...memberTabs, ...carolTabs].map((s) => record(s));

      for (const channelId of [pub.id, priv.id, dm.id, GENERAL]) await expectTypingOk(senderSocket, channelId);

      const toMember = [pub.id, priv.id, dm.id, GENERAL].map((id) => typingEvent(id, sender));
      const toCarol = [typingEvent(GENERAL, sender)];
      await expectUntilMarker(recs, [[], [], toMember, toMember, toCarol, toCarol]);
    },
  );

  test("the relayed userId is the token's user, never one in the payload; extra payload fields are not relayed", async () => {
    const pub = await createChannel(alice, "public");
    await join(bob, pub.id);
    const aliceSocket = await connect(alice, "websocket");
    const bobSocket = await connect(bob, "polling");
    const rec = record(bobSocket);
    expect(await typeWithAck(aliceSocket, { channelId: pub.id, userId: bob.user.id, extra: "x" })).toStrictEqual({ ok: true });
    await expectUntilMarker([rec], [[typingEvent(pub.id, alice)]]);
  });

  test("a typing event never creates a message row (relayed, throttled or refused)", async () => {
    const pub = await createChannel(alice, "public");
    const priv = await createChannel(bob, "private");
    const socket = await connect(alice, "polling");
    const before = await messageCount();
    await expectTypingOk(socket, pub.id);
    await expectTypingOk(socket, pub.id);
    expectRefusal(await typeWithAck(socket, { channelId: priv.id }), "NOT_FOUND");
    expectRefusal(await typeWithAck(socket, { channelId: 0 }), "VALIDATION_FAILED", "channelId");
    expect(await messageCount()).toBe(before);
  });
});

// =======================================================================================
// 7. Typing: throttle

describe("typing throttle (per user and channel)", () => {
  test("default 1 per 2 s: 10 rapid events all acked ok, one relayed; another channel and another user are not held back", async () => {
    const [p1c, p2c] = [await createChannel(alice, "public"), await createChannel(alice, "public")];
    await join(bob, p1c.id);
    await join(bob, p2c.id);
    const aliceSocket = await connect(alice, "websocket");
    const bobSocket = await connect(bob, "polling");
    const [aliceRec, bobRec] = [record(aliceSocket), record(bobSocket)];

    const acks = await Promise.all(Array.from({ length: 10 }, () => typeWithAck(aliceSocket, { channelId: p1c.id })));
    expect(acks).toStrictEqual(Array.from({ length: 10 }, () => ({ ok: true })));
    await expectTypingOk(aliceSocket, p2c.id); // alice, another channel
    await expectTypingOk(bobSocket, p1c.id); // another user, the same channel
    await expectTypingOk(aliceSocket, p1c.id); // alice in the first channel again, still within the window
    await expectUntilMarker([bobRec, aliceRec], [[typingEvent(p1c.id, alice), typingEvent(p2c.id, alice)], [typingEvent(p1c.id, bob)]]);
  });

  test("the throttle holds across the user's tabs (it is per user, not per socket)", async () => {
    const pub = await createChannel(alice, "public");
    await join(bob, pub.id);
    const aliceTabs = await tabs(alice);
    const rec = record(await connect(bob, "websocket"));
    await expectTypingOk(aliceTabs[0], pub.id);
    await expectTypingOk(aliceTabs[1], pub.id);
    await expectUntilMarker([rec], [[typingEvent(pub.id, alice)]]);
  });

  test("RATE_LIMIT_TYPING=1/1s: one relayed, the rest of the window dropped, one relayed again once the window has passed", async () => {
    const pub = await createChannel(fastAlice, "public", fast);
    await join(fastBob, pub.id, fast);
    const aliceSocket = await connect(fastAlice, "polling", fast);
    const rec = record(await connect(fastBob, "websocket", fast));

    for (let i = 0; i < 6; i++) await expectTypingOk(aliceSocket, pub.id);
    await Bun.sleep(1_100); // let the one-second window pass
    await expectTypingOk(aliceSocket, pub.id);
    await expectTypingOk(aliceSocket, pub.id);
    await expectUntilMarker([rec], [[typingEvent(pub.id, fastAlice), typingEvent(pub.id, fastAlice)]], fast);
  });
});

// =======================================================================================
// 8. Typing: membership changes mid-connection

describe("typing and membership changes mid-connection", () => {
  test.each(["polling", "websocket"] as Transport[])(
    "joining a public channel (tab on %s): types there and hears others at once; after leaving: hears nothing, typing refused FORBIDDEN",
    async (transport) => {
      const pub = await createChannel(alice, "public");
      await join(dave, pub.id);
      const aliceSocket = await connect(alice, "websocket");
      const daveSocket = await connect(dave, "polling");
      const carolSocket = await connect(carol, transport);
      const carolOther = await connect(carol, transport === "polling" ? "websocket" : "polling");

      // Not joined yet: refused (and the refusal must not spend carol's throttle point).
      expectRefusal(await typeWithAck(carolSocket, { channelId: pub.id }), "FORBIDDEN");

      let recs = [aliceSocket, daveSocket, carolSocket, carolOther].map((s) => record(s));
      await join(carol, pub.id);
      await expectTypingOk(carolSocket, pub.id);
      await expectTypingOk(aliceSocket, pub.id);
      await expectUntilMarker(recs, [
        [typingEvent(pub.id, carol)],
        [typingEvent(pub.id, carol), typingEvent(pub.id, alice)],
        [joinedEvent(pub.id), typingEvent(pub.id, alice)],
        [joinedEvent(pub.id), typingEvent(pub.id, alice)],
      ]);

      recs = [aliceSocket, daveSocket, carolSocket, carolOther].map((s) => record(s));
      await leave(carol, pub.id);
      // dave's first typing there: relayed to the members who remain (alice), not to carol.
      await expectTypingOk(daveSocket, pub.id);
      expectRefusal(await typeWithAck(carolSocket, { channelId: pub.id }), "FORBIDDEN");
      expectRefusal(await typeWithAck(carolOther, { channelId: pub.id }), "FORBIDDEN");
      await expectUntilMarker(recs, [[typingEvent(pub.id, dave)], [], [leftEvent(pub.id)], [leftEvent(pub.id)]]);
    },
  );

  test("added to a private channel mid-connection: types there at once; after leaving, the channel is NOT_FOUND", async () => {
    const priv = await createChannel(alice, "private");
    const aliceSocket = await connect(alice, "polling");
    const bobSocket = await connect(bob, "websocket");
    expectRefusal(await typeWithAck(bobSocket, { channelId: priv.id }), "NOT_FOUND");

    let recs = [aliceSocket, bobSocket].map((s) => record(s));
    await addMember(alice, priv.id, bob.user.id);
    await expectTypingOk(bobSocket, priv.id);
    await expectTypingOk(aliceSocket, priv.id);
    await expectUntilMarker(recs, [[typingEvent(priv.id, bob)], [joinedEvent(priv.id), typingEvent(priv.id, alice)]]);

    recs = [aliceSocket, bobSocket].map((s) => record(s));
    await leave(bob, priv.id);
    expectRefusal(await typeWithAck(bobSocket, { channelId: priv.id }), "NOT_FOUND");
    await expectUntilMarker(recs, [[], [leftEvent(priv.id)]]);
  });
});

// =======================================================================================
// 9. Typing: refusals (carol is the sender; alice and bob are the members who must hear nothing)

describe("typing refusals", () => {
  let pub: Channel;
  let priv: Channel;
  let dm: Channel;
  beforeAll(async () => {
    pub = await createChannel(alice, "public");
    await join(bob, pub.id);
    priv = await createChannel(alice, "private");
    await addMember(alice, priv.id, bob.user.id);
    dm = await direct(alice, bob);
  });

  const refusals: [string, string, () => number][] = [
    ["a private channel carol is not in", "NOT_FOUND", () => priv.id],
    ["a direct channel of two other users", "NOT_FOUND", () => dm.id],
    ["an unknown channel", "NOT_FOUND", () => UNKNOWN_CHANNEL],
    ["a public channel carol has not joined", "FORBIDDEN", () => pub.id],
  ];

  const validation: [string, string, unknown[]][] = [
    ["no payload", "(root)", []],
    ["a string", "(root)", ["typing"]],
    ["a number", "(root)", [1]],
    ["null", "(root)", [null]],
    ["an array", "(root)", [[{ channelId: GENERAL }]]],
    ["{}", "channelId", [{}]],
    ["channelId 0", "channelId", [{ channelId: 0 }]],
    ["channelId -1", "channelId", [{ channelId: -1 }]],
    ["channelId 1.5", "channelId", [{ channelId: 1.5 }]],
    ['channelId "1"', "channelId", [{ channelId: "1" }]],
    ["channelId 2147483648", "channelId", [{ channelId: 2_147_483_648 }]],
    ["channelId null", "channelId", [{ channelId: null }]],
    ["channelId true", "channelId", [{ channelId: true }]],
  ];

  /** Every tab of alice, bob and carol, recorded; carol's polling tab (index 4) is the sender. */
  async function everyone() {
    const sockets = [...(await tabs(alice)), ...(await tabs(bob)), ...(await tabs(carol))];
    return { sender: sockets[4]!, recs: sockets.map((s) => record(s)) };
  }

  test.each(refusals)("%s → ack { ok: false, error: %s }; nothing relayed", async (_name, code, channelId) => {
    const { sender, recs } = await everyone();
    expectRefusal(await typeWithAck(sender, { channelId: channelId() }), code);
    await expectUntilMarker(recs);
  });

  test.each(validation)("%s → ack VALIDATION_FAILED, details naming %s; nothing relayed", async (_name, path, args) => {
    const { sender, recs } = await everyone();
    expectRefusal(await typeWithAck(sender, ...args), "VALIDATION_FAILED", path);
    await expectUntilMarker(recs);
  });

  const withoutAck: [string, string, string | undefined, () => unknown[]][] = [
    ...refusals.map(([name, code, channelId]): [string, string, string | undefined, () => unknown[]] => [name, code, undefined, () => [{ channelId: channelId() }]]),
    ...validation.map(([name, path, args]): [string, string, string | undefined, () => unknown[]] => [name, "VALIDATION_FAILED", path, () => args]),
  ];

  test.each(withoutAck)(
    "without an ack callback, %s → `typing:error` %s to the sender only (not `message:error`); the connection stays usable",
    async (_name, code, path, args) => {
      const { sender, recs } = await everyone();
      const errorSeen = recs[4]!.until(([event]) => event === "typing:error");
      loose(sender).emit("typing", ...args());
      const [, error] = (await errorSeen).at(-1)!;
      expectErrorBody(error as ErrorBody, code, path);

      // Still connected and usable: a message sent afterwards is acknowledged and delivered.
      const sent = await sendWithAck(sender, { content: `after ${crypto.randomUUID()}` });
      expect(sent).toEqual({ ok: true, message: expect.objectContaining({ userId: carol.user.id, channelId: GENERAL }) });
      const message: Recorded = ["message", sent.message];
      await expectUntilMarker(recs, [[message], [message], [message], [message], [["typing:error", error], message], [message]]);
    },
  );
});
