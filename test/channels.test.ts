import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { asHistory, expectMessageShape, isMessage, record, type Recorded, type Recorder } from "./helpers/recorder.ts";
import { expectUntilMarker, markerContent } from "./helpers/markers.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, transports, uniqueName, type ChatClient, type Json, type Registered } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { Raw, apiFor, expectStatus, messagePoster } from "./helpers/http.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §8 (conversations: channels, membership-scoped delivery, direct channels, per-channel
// history, read markers, ordering) on top of §3/§4, with §0's error shape for every refusal.
// Edits and deletes: edits.test.ts; presence and typing: presence.test.ts; search: search.test.ts.

const t = await startTestServer();

const GENERAL = 1;
const MAX_INT4 = 2_147_483_647;
const isoTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

type Channel = { id: number; name: string; kind: "public" | "private" | "direct"; createdAt: string; unread: number; seq: number };
type Ack = { ok: true; message: ChatMessage } | { ok: false; error: { code: string; message: string; details?: { path: string; message: string }[] } };

// ---------------------------------------------------------------------------------------
// Handshake hook: lets a test hold one user's handshake after the server has read the user's
// channels (loadSocketChannels runs before it) and before the socket is connected.

const handshakeGates = new Map<number, { reached: () => void; released: Promise<void> }>();
t.app.io.use(async (socket, next) => {
  const gate = handshakeGates.get(socket.data.user.id);
  if (gate) {
    gate.reached();
    await gate.released;
  }
  next();
});

/** Holds `user`'s next handshake; `reached` resolves once it is held, `release()` lets it go on. */
function holdHandshake(user: Registered) {
  let reached!: () => void;
  let release!: () => void;
  const reachedP = new Promise<void>((resolve) => (reached = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  handshakeGates.set(user.user.id, { reached, released });
  return {
    reached: reachedP,
    release() {
      handshakeGates.delete(user.user.id);
      release();
    },
  };
}

// ---------------------------------------------------------------------------------------
// Helpers

/** Sockets opened by one test, closed after it so no test leaks listeners into the next. */
const { connect } = socketTracker(t);

/** Two tabs of one user: one socket per transport. */
const tabs = (user: Registered) => Promise.all(transports.map((transport) => connect(user, transport)));

const api = apiFor(t);

/** The channel shape of api.md §8, exactly. */
function expectChannel(channel: unknown, expected: { id?: number; name: string; kind: Channel["kind"]; unread: number; seq?: number }) {
  expect(Object.keys(channel as object).sort()).toEqual(["createdAt", "id", "kind", "name", "seq", "unread"]);
  expect(channel).toEqual({
    id: expected.id ?? expect.any(Number),
    name: expected.name,
    kind: expected.kind,
    createdAt: expect.stringMatching(isoTime),
    unread: expected.unread,
    // The channel's newest event number (api.md §11): 0 for a new channel.
    seq: expected.seq ?? expect.any(Number),
  });
  expect(Number.isInteger((channel as Channel).id)).toBe(true);
}

async function createChannel(owner: Registered, kind: "public" | "private", name = uniqueName(kind)): Promise<Channel> {
  return expectStatus(await api("POST", "/api/channels", owner.token, { name, kind }), 201);
}

async function join(user: Registered, channelId: number): Promise<Channel> {
  return expectStatus(await api("POST", `/api/channels/${channelId}/join`, user.token), 200);
}

async function addMember(actor: Registered, channelId: number, userId: number): Promise<Channel> {
  return expectStatus(await api("POST", `/api/channels/${channelId}/members`, actor.token, { userId }), 200);
}

async function direct(user: Registered, other: Registered, status: 200 | 201): Promise<Channel> {
  return expectStatus(await api("POST", `/api/direct/${other.user.id}`, user.token), status);
}

async function listChannels(user: Registered): Promise<Channel[]> {
  return expectStatus(await api("GET", "/api/channels", user.token), 200);
}

async function unreadIn(user: Registered, channelId: number): Promise<number | undefined> {
  return (await listChannels(user)).find((c) => c.id === channelId)?.unread;
}

async function markRead(user: Registered, channelId: number, messageId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/read`, user.token, { messageId }), 204);
}

async function historyOf(user: Registered, channelId: number, query = ""): Promise<ChatMessage[]> {
  return expectStatus(await api("GET", `/api/channels/${channelId}/messages${query}`, user.token), 200);
}

const ids = (messages: ChatMessage[]) => messages.map((m) => m.id);

/** Sends over a socket with an ack; `channelId` undefined leaves the field out. */
async function sendIn(socket: ChatClient, channelId: number | undefined, content = `m ${crypto.randomUUID()}`): Promise<ChatMessage> {
  const ack = (await sendWithAck(socket, channelId === undefined ? { content } : { content, channelId })) as Ack;
  expect(ack).toEqual({ ok: true, message: expect.objectContaining({ channelId: channelId ?? GENERAL, content }) });
  return (ack as Extract<Ack, { ok: true }>).message;
}

/** POST /api/messages, the REST twin of the socket event; `channelId` undefined leaves the field out. */
const postIn = messagePoster(t);

/** Everyone is in general and nobody can leave it: the marker technique's channel. */
const markerBot = await t.register(uniqueName("marker"));

/** The marker technique (helpers/markers.ts), the marker posted in general by `markerBot`. */
const expectOnlyMarker = (recorders: Recorder[], before?: Recorded[][]) => expectUntilMarker(() => postIn(markerBot, GENERAL, markerContent()), recorders, before);

/** Everything a refused request could have changed. */
async function snapshot() {
  const channels = await t.database.sql`SELECT id, name, kind::text AS kind, created_by, direct_key, created_at FROM channels ORDER BY id`;
  const members = await t.database.sql`SELECT channel_id, user_id, last_read_id, joined_at FROM channel_members ORDER BY channel_id, user_id`;
  const [messages] = await t.database.sql`SELECT count(*)::int AS n, coalesce(max(id), 0)::int AS max FROM messages`;
  return { channels: [...channels], members: [...members], messages };
}

async function memberRow(channelId: number, userId: number) {
  const rows = await t.database.sql`SELECT last_read_id FROM channel_members WHERE channel_id = ${channelId} AND user_id = ${userId}`;
  return rows[0] as { last_read_id: number } | undefined;
}

async function countIn(channelId: number): Promise<number> {
  const [row] = await t.database.sql`SELECT count(*)::int AS n FROM messages WHERE channel_id = ${channelId}`;
  return (row as { n: number }).n;
}

/** A fresh user whose role is set in the database before any authenticated request of its session. */
async function userWithRole(role: "moderator" | "admin"): Promise<Registered> {
  const user = await t.register(uniqueName(role));
  await t.database.sql`UPDATE users SET role = ${role}::"Role" WHERE id = ${user.user.id}`;
  return user;
}

/** Bad `:id` path segments: not a positive integer as written, or beyond any id. */
const badIds = ["abc", "0", "-1", "1.5", "1e3", "0x10", "%207" /* " 7" */, "99999999999", "2147483648"];

// ---------------------------------------------------------------------------------------
// 1. general

describe("general", () => {
  let alice: Registered;
  let bob: Registered;
  beforeAll(async () => {
    [alice, bob] = await Promise.all([t.register(), t.register()]);
  });

  test("every registered user is a member; GET /api/channels lists general {id:1, name:'general', kind:'public'} with its unread count", async () => {
    const [orphans] = await t.database.sql`
      SELECT count(*)::int AS n FROM users u
      WHERE NOT EXISTS (SELECT 1 FROM channel_members m WHERE m.user_id = u.id AND m.channel_id = 1)`;
    expect((orphans as { n: number }).n).toBe(0);
    const [users] = await t.database.sql`SELECT count(*)::int AS n FROM users`;
    expect((users as { n: number }).n).toBeGreaterThanOrEqual(3);

    await postIn(bob, undefined, "one for alice's unread count");
    const list = await listChannels(alice);
    expect(list).toHaveLength(1);
    const [general] = list;
    const [expected] = await t.database.sql`
      SELECT c.created_at, (SELECT count(*)::int FROM messages msg
        WHERE msg.channel_id = 1 AND msg.id > m.last_read_id AND msg.user_id <> ${alice.user.id}) AS unread
      FROM channels c JOIN channel_members m ON m.channel_id = c.id AND m.user_id = ${alice.user.id} WHERE c.id = 1`;
    const row = expected as { created_at: Date; unread: number };
    expect(row.unread).toBeGreaterThanOrEqual(1);
    expectChannel(general, { id: GENERAL, name: "general", kind: "public", unread: row.unread });
    expect(general!.createdAt).toBe(row.created_at.toISOString());
  });

  test.each(transports)("a socket (%s) message without channelId goes to general: channelId 1 in the ack, the broadcast and the row", async (transport) => {
    const sender = await connect(alice, transport);
    const watcher = await connect(bob, transport === "polling" ? "websocket" : "polling");
    const recorder = record(watcher);
    const message = await sendIn(sender, undefined, "no channelId");
    expectMessageShape(message, alice.user, "no channelId", GENERAL);
    expect(await recorder.until(isMessage(message.id))).toEqual([["message", message]]);
    const [row] = await t.database.sql`SELECT channel_id FROM messages WHERE id = ${message.id}`;
    expect(row).toEqual({ channel_id: GENERAL });
  });

  test("a REST message without channelId goes to general, and reaches general's sockets", async () => {
    const recorders = (await tabs(bob)).map(record);
    const message = await postIn(alice, undefined, "rest, no channelId");
    expectMessageShape(message, alice.user, "rest, no channelId", GENERAL);
    for (const r of recorders) expect(await r.until(isMessage(message.id))).toEqual([["message", message]]);
  });

  test("GET /api/messages stays general-only (and equals GET /api/channels/1/messages)", async () => {
    const side = await createChannel(alice, "public");
    const inSide = await postIn(alice, side.id, "not in general");
    const inGeneral = await postIn(alice, undefined, "in general");
    const newest: ChatMessage[] = await expectStatus(await api("GET", "/api/messages?limit=200", alice.token), 200);
    expect(newest.length).toBeGreaterThan(0);
    expect(newest[0]).toEqual(asHistory(inGeneral));
    expect(newest.every((m) => m.channelId === GENERAL)).toBe(true);
    expect(ids(newest)).not.toContain(inSide.id);
    const around: ChatMessage[] = await expectStatus(await api("GET", `/api/messages?after=${inSide.id - 1}`, alice.token), 200);
    expect(ids(around)).toEqual([inGeneral.id]);
    expect(await historyOf(alice, GENERAL, "?limit=200")).toEqual(newest);
    expect(await historyOf(alice, side.id)).toEqual([asHistory(inSide)]);
  });

  test("leaving general → 403 FORBIDDEN, and the user is still in it; joining it again is harmless", async () => {
    const before = await snapshot();
    await expectError(await api("POST", `/api/channels/${GENERAL}/leave`, alice.token), 403, "FORBIDDEN");
    expect(await snapshot()).toEqual(before);
    expectChannel(await join(alice, GENERAL), { id: GENERAL, name: "general", kind: "public", unread: (await unreadIn(alice, GENERAL))! });
    expect(await snapshot()).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------
// 2. Creating channels

describe("POST /api/channels", () => {
  let alice: Registered;
  let bob: Registered;
  beforeAll(async () => {
    [alice, bob] = await Promise.all([t.register(), t.register()]);
  });

  test.each(["public", "private"] as const)("%s: 201 {id, name, kind, createdAt, unread:0}; stored with the creator as its only member", async (kind) => {
    const name = uniqueName(`team-${kind}`);
    const channel: Channel = await expectStatus(await api("POST", "/api/channels", alice.token, { name, kind }), 201);
    expectChannel(channel, { name, kind, unread: 0 });
    expect(channel.id).toBeGreaterThan(GENERAL);
    const [row] = await t.database.sql`SELECT name, kind::text AS kind, created_by, direct_key, created_at FROM channels WHERE id = ${channel.id}`;
    expect(row).toEqual({ name, kind, created_by: alice.user.id, direct_key: null, created_at: new Date(channel.createdAt) });
    const members = await t.database.sql`SELECT user_id, last_read_id FROM channel_members WHERE channel_id = ${channel.id}`;
    expect([...members]).toEqual([{ user_id: alice.user.id, last_read_id: 0 }]);
    expect(await listChannels(alice)).toContainEqual(channel);
    expect((await listChannels(bob)).map((c) => c.id)).not.toContain(channel.id);
  });

  // Public names are unique by look (test/names.test.ts); private ones need not be.
  test("the name is trimmed and NFC-normalised; 64 code points (even astral ones) are accepted; private names need not be unique", async () => {
    for (const [sent, stored, kind] of [
      ["  padded name \t", "padded name", "public"],
      ["Cafe\u0301 ☕", "Café ☕", "public"],
      ["😀".repeat(64), "😀".repeat(64), "public"],
      ["ж".repeat(64), "ж".repeat(64), "public"],
      ["same name", "same name", "private"],
      ["same name", "same name", "private"],
    ] as const) {
      const channel: Channel = await expectStatus(await api("POST", "/api/channels", alice.token, { name: sent, kind }), 201);
      expectChannel(channel, { name: stored, kind, unread: 0 });
      const [row] = await t.database.sql`SELECT name FROM channels WHERE id = ${channel.id}`;
      expect(row).toEqual({ name: stored });
    }
  });

  test.each(transports)("the creator's live socket (%s) is told channel:joined and receives the new channel's messages at once, without reconnecting", async (transport) => {
    const socket = await connect(alice, transport);
    const recorder = record(socket);
    const channel = await createChannel(alice, "private");
    const message = await sendIn(socket, channel.id, "first words");
    expectMessageShape(message, alice.user, "first words", channel.id);
    await expectOnlyMarker([recorder], [[["channel:joined", { channelId: channel.id }], ["message", message]]]);
  });

  const badBodies: Array<{ name: string; body: unknown; path?: string; code?: string }> = [
    { name: "name missing", body: { kind: "public" }, path: "name" },
    { name: 'name ""', body: { name: "", kind: "public" }, path: "name" },
    { name: 'name "   "', body: { name: "   ", kind: "public" }, path: "name" },
    { name: "name of whitespace and newlines only", body: { name: " \n\t ", kind: "private" }, path: "name" },
    { name: "name of 65 characters", body: { name: "n".repeat(65), kind: "public" }, path: "name" },
    { name: "name of 65 astral characters", body: { name: "😀".repeat(65), kind: "public" }, path: "name" },
    { name: "name of 2000 characters", body: { name: "n".repeat(2000), kind: "public" }, path: "name" },
    { name: "name a number", body: { name: 42, kind: "public" }, path: "name" },
    { name: "name null", body: { name: null, kind: "public" }, path: "name" },
    { name: "name an array", body: { name: ["a"], kind: "public" }, path: "name" },
    { name: "name with a BEL control character", body: { name: "a\u0007b", kind: "public" }, path: "name" },
    { name: "name with a newline inside", body: { name: "two\nlines", kind: "public" }, path: "name" },
    { name: "name with a tab inside", body: { name: "a\tb", kind: "public" }, path: "name" },
    { name: "name with ESC", body: { name: "red\u001b[31m", kind: "public" }, path: "name" },
    { name: "name with DEL", body: { name: "a\u007fb", kind: "public" }, path: "name" },
    { name: "name with a NUL character", body: { name: "a\u0000b", kind: "public" }, path: "name" },
    { name: "name with an unpaired surrogate", body: { name: "a\ud800b", kind: "public" }, path: "name" },
    { name: "kind missing", body: { name: "ok" }, path: "kind" },
    { name: 'kind "direct"', body: { name: "ok", kind: "direct" }, path: "kind" },
    { name: 'kind "secret"', body: { name: "ok", kind: "secret" }, path: "kind" },
    { name: 'kind "Public"', body: { name: "ok", kind: "Public" }, path: "kind" },
    { name: "kind a number", body: { name: "ok", kind: 1 }, path: "kind" },
    { name: "kind null", body: { name: "ok", kind: null }, path: "kind" },
    { name: "both missing ({})", body: {}, path: "name" },
    { name: "an array body", body: [{ name: "ok", kind: "public" }], path: "(root)" },
    { name: "a null body", body: null, path: "(root)" },
    { name: "a string body", body: "general", path: "(root)" },
    { name: "not JSON", body: new Raw('{"name": "ok", "kind": '), code: "BAD_JSON" },
  ];

  test.each(badBodies)("$name → 400, details name the field, nothing stored", async ({ body, path, code }) => {
    const before = await snapshot();
    const res = await api("POST", "/api/channels", alice.token, body);
    await expectError(res, 400, code ?? "VALIDATION_FAILED", path);
    expect(await snapshot()).toEqual(before);
  });

  test("both fields bad: details list both", async () => {
    const body = await expectError(await api("POST", "/api/channels", alice.token, { name: "", kind: "secret" }), 400, "VALIDATION_FAILED");
    expect(body.error.details!.map((d) => d.path).sort()).toEqual(["kind", "name"]);
  });

  test.each([
    ["no token", undefined],
    ["a garbage token", "garbage"],
    ["a token with its signature cut off", "CUT"],
  ])("%s → 401 UNAUTHORIZED, nothing stored", async (_name, token) => {
    const before = await snapshot();
    const bearer = token === "CUT" ? alice.token.split(".").slice(0, 2).join(".") + ".x" : token;
    await expectError(await api("POST", "/api/channels", bearer, { name: "ok", kind: "public" }), 401, "UNAUTHORIZED");
    expect(await snapshot()).toEqual(before);
  });
});

describe("every channel route needs a token", () => {
  test.each([
    ["GET", "/api/channels"],
    ["POST", "/api/channels"],
    ["POST", "/api/channels/1/join"],
    ["POST", "/api/channels/1/leave"],
    ["POST", "/api/channels/1/members"],
    ["POST", "/api/channels/1/read"],
    ["GET", "/api/channels/1/messages"],
    ["POST", "/api/direct/1"],
  ])("%s %s without a token → 401 UNAUTHORIZED, nothing changed", async (method, path) => {
    const before = await snapshot();
    await expectError(await api(method, path, undefined, method === "POST" ? { name: "x", kind: "public", userId: 1, messageId: 1 } : undefined), 401, "UNAUTHORIZED");
    expect(await snapshot()).toEqual(before);
  });
});

describe("bad :id path parameters", () => {
  let alice: Registered;
  beforeAll(async () => {
    alice = await t.register();
  });

  const routes: Array<[method: string, path: (id: string) => string, body?: unknown, param?: string]> = [
    ["GET", (id) => `/api/channels/${id}/messages`],
    ["POST", (id) => `/api/channels/${id}/join`],
    ["POST", (id) => `/api/channels/${id}/leave`],
    ["POST", (id) => `/api/channels/${id}/members`, { userId: 1 }],
    ["POST", (id) => `/api/channels/${id}/read`, { messageId: 1 }],
    ["POST", (id) => `/api/direct/${id}`, undefined, "userId"],
  ];
  const rows = routes.flatMap(([method, path, body, param]) => badIds.map((id) => ({ method, url: path(id), body, param: param ?? "id" })));

  test.each(rows)("$method $url → 400 VALIDATION_FAILED naming $param, nothing changed", async ({ method, url, body, param }) => {
    const before = await snapshot();
    await expectError(await api(method, url, alice.token, body), 400, "VALIDATION_FAILED", param);
    expect(await snapshot()).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------
// 3. Membership-scoped delivery

describe("membership-scoped delivery", () => {
  let alice: Registered;
  let bob: Registered;
  let carol: Registered;
  let secret: Channel;
  let open: Channel;

  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
    secret = await createChannel(alice, "private");
    await addMember(alice, secret.id, bob.user.id);
    open = await createChannel(alice, "public");
  });

  test.each(transports)("a socket message (%s) in a private channel reaches its members' sockets, on both transports, and no one else's", async (transport) => {
    const sender = await connect(alice, transport);
    const [bobTabs, carolTabs] = await Promise.all([tabs(bob), tabs(carol)]);
    const members = [sender, ...bobTabs].map(record);
    const outsiders = carolTabs.map(record);
    const message = await sendIn(sender, secret.id, `secret over ${transport}`);
    expectMessageShape(message, alice.user, `secret over ${transport}`, secret.id);
    for (const r of members) expect(await r.until(isMessage(message.id))).toEqual([["message", message]]);
    const once: Recorded[] = [["message", message]];
    await expectOnlyMarker([...members, ...outsiders], [once, once, once, [], []]);
  });

  test("a REST message in a private channel reaches its members' sockets and no one else's", async () => {
    const [aliceTabs, bobTabs, carolTabs] = await Promise.all([tabs(alice), tabs(bob), tabs(carol)]);
    const members = [...aliceTabs, ...bobTabs].map(record);
    const outsiders = carolTabs.map(record);
    const message = await postIn(bob, secret.id, "secret over REST");
    expectMessageShape(message, bob.user, "secret over REST", secret.id);
    const once: Recorded[] = [["message", message]];
    await expectOnlyMarker([...members, ...outsiders], [once, once, once, once, [], []]);
  });

  test("a public channel's messages reach its members only, too: not every connected socket", async () => {
    const sender = await connect(alice, "websocket");
    const outsiders = (await tabs(carol)).map(record);
    const message = await sendIn(sender, open.id, "public but not joined");
    await expectOnlyMarker(outsiders);
    expect(message.channelId).toBe(open.id);
  });

  test("the private channel is listed for its members only", async () => {
    expect((await listChannels(alice)).map((c) => c.id)).toContain(secret.id);
    expect((await listChannels(bob)).map((c) => c.id)).toContain(secret.id);
    expect((await listChannels(carol)).map((c) => c.id)).toEqual([GENERAL]);
  });

  test("a non-member cannot read the history: 404 for a private channel (the same answer as no channel at all), 403 for a public one not joined", async () => {
    await postIn(alice, secret.id, "history carol must not see");
    await postIn(alice, open.id, "history carol must join for");
    const hidden = await expectError(await api("GET", `/api/channels/${secret.id}/messages`, carol.token), 404, "NOT_FOUND");
    const unknown = await expectError(await api("GET", `/api/channels/${MAX_INT4}/messages`, carol.token), 404, "NOT_FOUND");
    expect(hidden).toEqual(unknown);
    for (const query of ["?limit=200", `?after=1`, `?before=${MAX_INT4}`]) {
      await expectError(await api("GET", `/api/channels/${secret.id}/messages${query}`, carol.token), 404, "NOT_FOUND");
      await expectError(await api("GET", `/api/channels/${open.id}/messages${query}`, carol.token), 403, "FORBIDDEN");
    }
    // Positive control: members read both.
    expect((await historyOf(bob, secret.id)).length).toBeGreaterThan(0);
    expect((await historyOf(alice, open.id)).length).toBeGreaterThan(0);
  });

  test.each(transports)("a non-member cannot post over a socket (%s): NOT_FOUND in a private channel, FORBIDDEN in a public one, NOT_FOUND in none; nothing stored or broadcast", async (transport) => {
    const intruder = await connect(carol, transport);
    const recorders = [intruder, ...(await tabs(alice)), ...(await tabs(bob))].map(record);
    const before = await snapshot();
    for (const [channelId, code] of [
      [secret.id, "NOT_FOUND"],
      [open.id, "FORBIDDEN"],
      [MAX_INT4, "NOT_FOUND"],
    ] as const) {
      const ack = (await sendWithAck(intruder, { content: "let me in", channelId })) as Ack;
      expect(ack).toEqual({ ok: false, error: { code, message: expect.any(String) } });
    }
    expect(await snapshot()).toEqual(before);
    expect(intruder.connected).toBe(true);
    await expectOnlyMarker(recorders);
  });

  test("a non-member cannot post over REST: 404 in a private channel, 403 in a public one; nothing stored or broadcast", async () => {
    const recorders = [...(await tabs(alice)), ...(await tabs(bob))].map(record);
    const before = await snapshot();
    await expectError(await api("POST", "/api/messages", carol.token, { content: "let me in", channelId: secret.id }), 404, "NOT_FOUND");
    await expectError(await api("POST", "/api/messages", carol.token, { content: "let me in", channelId: open.id }), 403, "FORBIDDEN");
    await expectError(await api("POST", "/api/messages", carol.token, { content: "let me in", channelId: MAX_INT4 }), 404, "NOT_FOUND");
    expect(await snapshot()).toEqual(before);
    await expectOnlyMarker(recorders);
  });

  const badChannelIds: Array<[name: string, channelId: unknown]> = [
    ["0", 0],
    ["-1", -1],
    ["1.5", 1.5],
    ['"1" (a string)', "1"],
    ["null", null],
    ["an object", { id: 1 }],
    ["2147483648 (beyond any id)", MAX_INT4 + 1],
    ["1e20", 1e20],
  ];

  test.each(badChannelIds)("channelId %s → VALIDATION_FAILED naming channelId over socket and REST, nothing stored", async (_name, channelId) => {
    const socket = await connect(alice, "websocket");
    const before = await snapshot();
    const ack = (await sendWithAck(socket, { content: "where to?", channelId })) as Ack;
    expect(ack).toEqual({ ok: false, error: { code: "VALIDATION_FAILED", message: expect.any(String), details: expect.any(Array) } });
    const details = (ack as Extract<Ack, { ok: false }>).error.details!;
    expect(details.length).toBeGreaterThan(0);
    for (const detail of details) expect(detail).toEqual({ path: "channelId", message: expect.any(String) });
    await expectError(await api("POST", "/api/messages", alice.token, { content: "where to?", channelId }), 400, "VALIDATION_FAILED", "channelId");
    expect(await snapshot()).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------
// 4. Join and leave mid-connection

describe("join and leave", () => {
  let alice: Registered;
  let dave: Registered;
  let outsider: Registered;
  beforeAll(async () => {
    [alice, dave, outsider] = await Promise.all([t.register(), t.register(), t.register()]);
  });

  test("two tabs on different transports start receiving a public channel's messages the moment the user joins over REST, and stop the moment they leave", async () => {
    const sender = await connect(alice, "websocket");
    const daveTabs = await tabs(dave);
    const channel = await createChannel(alice, "public");

    // Not yet a member: nothing arrives.
    let recorders = daveTabs.map(record);
    await sendIn(sender, channel.id, "before dave joined");
    await expectOnlyMarker(recorders);

    // Both tabs are told, once their rooms changed (channel:joined, channel:left), then the messages follow or stop.
    recorders = daveTabs.map(record);
    const joined = await join(dave, channel.id);
    expectChannel(joined, { id: channel.id, name: channel.name, kind: "public", unread: 0 });
    expect(await memberRow(channel.id, dave.user.id)).toBeDefined();

    const m1 = await sendIn(sender, channel.id, "dave is in");
    const told: Recorded = ["channel:joined", { channelId: channel.id }];
    for (const r of recorders) expect(await r.until(isMessage(m1.id))).toEqual([told, ["message", m1]]);
    // Dave can post from either tab, no reconnect; both tabs get it.
    const m2 = await sendIn(daveTabs[0]!, channel.id, "dave speaks (polling)");
    const m3 = await sendIn(daveTabs[1]!, channel.id, "dave speaks (websocket)");
    const seen: Recorded[] = [told, ...[m1, m2, m3].map((m): Recorded => ["message", m])];
    await expectOnlyMarker(recorders, [seen, seen]);

    recorders = daveTabs.map(record);
    await expectStatus(await api("POST", `/api/channels/${channel.id}/leave`, dave.token), 204);
    expect(await memberRow(channel.id, dave.user.id)).toBeUndefined();
    expect((await listChannels(dave)).map((c) => c.id)).not.toContain(channel.id);

    await sendIn(sender, channel.id, "dave left");
    await postIn(alice, channel.id, "dave left (REST)");
    for (const socket of daveTabs) {
      const ack = (await sendWithAck(socket, { content: "still here?", channelId: channel.id })) as Ack;
      expect(ack).toMatchObject({ ok: false, error: { code: "FORBIDDEN" } });
    }
    const left: Recorded[] = [["channel:left", { channelId: channel.id }]];
    await expectOnlyMarker(recorders, [left, left]);
    await expectError(await api("GET", `/api/channels/${channel.id}/messages`, dave.token), 403, "FORBIDDEN");
  });

  test("joining twice is harmless: 200 both times, one membership row, the read marker kept, each message delivered once", async () => {
    const sender = await connect(alice, "polling");
    const daveTabs = await tabs(dave);
    const channel = await createChannel(alice, "public");
    const recorders = daveTabs.map(record);
    const first = await join(dave, channel.id);
    const m1 = await postIn(alice, channel.id);
    await markRead(dave, channel.id, m1.id);
    const m2 = await postIn(alice, channel.id);
    const second = await join(dave, channel.id);
    expectChannel(second, { id: channel.id, name: channel.name, kind: "public", unread: 1 });
    // Two messages later: two more events in its log.
    expect({ ...second, unread: 0, seq: second.seq - 2 }).toEqual(first);
    const rows = await t.database.sql`SELECT user_id, last_read_id FROM channel_members WHERE channel_id = ${channel.id} ORDER BY user_id`;
    expect([...rows]).toEqual(
      [
        { user_id: alice.user.id, last_read_id: 0 },
        { user_id: dave.user.id, last_read_id: m1.id },
      ].sort((a, b) => a.user_id - b.user_id),
    );
    expect(m2.id).toBeGreaterThan(m1.id);

    // Told of the first join only (the second changed nothing); every message once.
    const m3 = await sendIn(sender, channel.id, "once only");
    const seen: Recorded[] = [
      ["channel:joined", { channelId: channel.id }],
      ["message", m1],
      ["channel:read", { channelId: channel.id, lastReadId: m1.id }],
      ["message", m2],
      ["message", m3],
    ];
    await expectOnlyMarker(recorders, [seen, seen]);
  });

  describe("refusals", () => {
    let priv: Channel;
    let dm: Channel;
    let pub: Channel;
    beforeAll(async () => {
      priv = await createChannel(alice, "private");
      pub = await createChannel(alice, "public");
      dm = await direct(alice, dave, 201);
    });

    const joins: Array<{ name: string; who: () => Registered; channel: () => number; status: number; code: string }> = [
      { name: "a private channel one is not in → 404 (not revealed)", who: () => outsider, channel: () => priv.id, status: 404, code: "NOT_FOUND" },
      { name: "a private channel one is in → 403", who: () => alice, channel: () => priv.id, status: 403, code: "FORBIDDEN" },
      { name: "a direct channel one is not in → 404", who: () => outsider, channel: () => dm.id, status: 404, code: "NOT_FOUND" },
      { name: "a direct channel one is in → 403", who: () => dave, channel: () => dm.id, status: 403, code: "FORBIDDEN" },
      { name: "an unknown channel → 404", who: () => outsider, channel: () => MAX_INT4, status: 404, code: "NOT_FOUND" },
    ];

    test.each(joins)("join $name, nothing changed", async ({ who, channel, status, code }) => {
      const before = await snapshot();
      const body = await expectError(await api("POST", `/api/channels/${channel()}/join`, who().token), status, code);
      expect(await snapshot()).toEqual(before);
      if (status === 404) {
        const unknown = await expectError(await api("POST", `/api/channels/${MAX_INT4}/join`, who().token), 404, "NOT_FOUND");
        expect(body).toEqual(unknown);
      }
    });

    const leaves: Array<{ name: string; who: () => Registered; channel: () => number; status: number; code: string }> = [
      { name: "general → 403", who: () => alice, channel: () => GENERAL, status: 403, code: "FORBIDDEN" },
      { name: "a public channel one is not in → 403", who: () => outsider, channel: () => pub.id, status: 403, code: "FORBIDDEN" },
      { name: "a private channel one is not in → 404", who: () => outsider, channel: () => priv.id, status: 404, code: "NOT_FOUND" },
      { name: "a direct channel one is not in → 404", who: () => outsider, channel: () => dm.id, status: 404, code: "NOT_FOUND" },
      { name: "a direct channel one is in → 403 (both users stay in it)", who: () => dave, channel: () => dm.id, status: 403, code: "FORBIDDEN" },
      { name: "an unknown channel → 404", who: () => outsider, channel: () => MAX_INT4, status: 404, code: "NOT_FOUND" },
    ];

    test.each(leaves)("leave $name, nothing changed", async ({ who, channel, status, code }) => {
      const before = await snapshot();
      await expectError(await api("POST", `/api/channels/${channel()}/leave`, who().token), status, code);
      expect(await snapshot()).toEqual(before);
    });

    test("leaving twice: 204, then 403 (no longer a member)", async () => {
      await join(outsider, pub.id);
      await expectStatus(await api("POST", `/api/channels/${pub.id}/leave`, outsider.token), 204);
      const before = await snapshot();
      await expectError(await api("POST", `/api/channels/${pub.id}/leave`, outsider.token), 403, "FORBIDDEN");
      expect(await snapshot()).toEqual(before);
    });

    test("a private channel's creator can leave it, and its sockets stop receiving it", async () => {
      const own = await createChannel(alice, "private");
      await addMember(alice, own.id, dave.user.id);
      const recorders = (await tabs(alice)).map(record);
      await expectStatus(await api("POST", `/api/channels/${own.id}/leave`, alice.token), 204);
      await postIn(dave, own.id, "alice left");
      const left: Recorded[] = [["channel:left", { channelId: own.id }]];
      await expectOnlyMarker(recorders, [left, left]);
      await expectError(await api("GET", `/api/channels/${own.id}/messages`, alice.token), 404, "NOT_FOUND");
    });
  });

  describe("while a socket is still handshaking", () => {
    test.each(transports)("a join that lands after the server read the user's channels still reaches the socket (%s)", async (transport) => {
      const user = await t.register();
      const channel = await createChannel(alice, "public");
      const hold = holdHandshake(user);
      const connecting = connect(user, transport);
      await hold.reached;
      await join(user, channel.id);
      hold.release();
      const socket = await connecting;
      const recorder = record(socket);
      const message = await postIn(alice, channel.id, "joined mid-handshake");
      await expectOnlyMarker([recorder], [[["message", message]]]);
    });

    test.each(transports)("a leave that lands after the server read the user's channels still stops the socket (%s)", async (transport) => {
      const user = await t.register();
      const channel = await createChannel(alice, "public");
      await join(user, channel.id);
      const hold = holdHandshake(user);
      const connecting = connect(user, transport);
      await hold.reached;
      await expectStatus(await api("POST", `/api/channels/${channel.id}/leave`, user.token), 204);
      hold.release();
      const socket = await connecting;
      const recorder = record(socket);
      await postIn(alice, channel.id, "left mid-handshake");
      await expectOnlyMarker([recorder]);
    });
  });
});

// ---------------------------------------------------------------------------------------
// 5. Adding members to private channels

describe("POST /api/channels/:id/members", () => {
  let owner: Registered;
  let member: Registered;
  let moderator: Registered;
  let admin: Registered;
  let outsiderMod: Registered;
  let targets: Registered[];
  let channel: Channel;

  beforeAll(async () => {
    [owner, member, ...targets] = await Promise.all([t.register(), t.register(), t.register(), t.register(), t.register(), t.register()]);
    // Roles set in the database before these users' first authenticated request.
    [moderator, admin, outsiderMod] = await Promise.all([userWithRole("moderator"), userWithRole("admin"), userWithRole("moderator")]);
    channel = await createChannel(owner, "private");
  });

  test("the creator adds a member: 200 channel; the new member's live sockets (both transports) receive its messages at once; unread starts at 0", async () => {
    const earlier = await postIn(owner, channel.id, "before member was added");
    const memberTabs = await tabs(member);
    const recorders = memberTabs.map(record);
    await postIn(owner, channel.id, "still before");
    const added: Channel = await expectStatus(await api("POST", `/api/channels/${channel.id}/members`, owner.token, { userId: member.user.id }), 200);
    expectChannel(added, { id: channel.id, name: channel.name, kind: "private", unread: 0 });
    const message = await postIn(owner, channel.id, "welcome");
    const seen: Recorded[] = [["channel:joined", { channelId: channel.id }], ["message", message]];
    for (const r of recorders) expect(await r.until(isMessage(message.id))).toEqual(seen);
    await expectOnlyMarker(recorders, [seen, seen]);
    // The newcomer can post and read the whole history; its unread count counted only what came after it joined.
    expect(await unreadIn(member, channel.id)).toBe(1);
    await sendIn(memberTabs[0]!, channel.id, "thanks");
    expect(ids(await historyOf(member, channel.id, `?after=${earlier.id - 1}`))).toContain(earlier.id);
  });

  test("adding someone who is already a member is harmless: 200, one row, their read marker kept", async () => {
    const before = await snapshot();
    await addMember(owner, channel.id, member.user.id);
    await addMember(owner, channel.id, owner.user.id);
    expect(await snapshot()).toEqual(before);
  });

  test.each([
    ["a moderator", () => moderator, 0],
    ["an admin", () => admin, 1],
  ] as const)("%s who is a member but not the creator may add members", async (_name, actor, i) => {
    await addMember(owner, channel.id, actor().user.id);
    const target = targets[i]!;
    const recorder = record(await connect(target, i === 0 ? "polling" : "websocket"));
    const added = await addMember(actor(), channel.id, target.user.id);
    expectChannel(added, { id: channel.id, name: channel.name, kind: "private", unread: (await unreadIn(actor(), channel.id))! });
    expect(await memberRow(channel.id, target.user.id)).toBeDefined();
    const message = await postIn(owner, channel.id, `added by ${_name}`);
    await expectOnlyMarker([recorder], [[["channel:joined", { channelId: channel.id }], ["message", message]]]);
  });

  const refusals: Array<{ name: string; actor: () => Registered; channel: () => Promise<number>; userId: () => number; status: number; code: string }> = [
    {
      name: "a plain member who is not the creator → 403",
      actor: () => member,
      channel: async () => channel.id,
      userId: () => targets[2]!.user.id,
      status: 403,
      code: "FORBIDDEN",
    },
    {
      name: "a moderator who is not a member → 404 (the channel is not revealed)",
      actor: () => outsiderMod,
      channel: async () => channel.id,
      userId: () => targets[2]!.user.id,
      status: 404,
      code: "NOT_FOUND",
    },
    {
      name: "a plain user who is not a member → 404",
      actor: () => targets[2]!,
      channel: async () => channel.id,
      userId: () => targets[2]!.user.id,
      status: 404,
      code: "NOT_FOUND",
    },
    {
      name: "the creator of a public channel → 403 (public channels are joined)",
      actor: () => owner,
      channel: async () => (await createChannel(owner, "public")).id,
      userId: () => targets[2]!.user.id,
      status: 403,
      code: "FORBIDDEN",
    },
    {
      name: "an admin on a public channel → 403",
      actor: () => admin,
      channel: async () => (await createChannel(admin, "public")).id,
      userId: () => targets[2]!.user.id,
      status: 403,
      code: "FORBIDDEN",
    },
    {
      name: "general → 403",
      actor: () => admin,
      channel: async () => GENERAL,
      userId: () => targets[2]!.user.id,
      status: 403,
      code: "FORBIDDEN",
    },
    {
      name: "a member of a direct channel → 403 (a direct channel has two members for good)",
      actor: () => owner,
      channel: async () => (await direct(owner, targets[3]!, 201)).id,
      userId: () => targets[2]!.user.id,
      status: 403,
      code: "FORBIDDEN",
    },
    {
      name: "an unknown user → 404",
      actor: () => owner,
      channel: async () => channel.id,
      userId: () => MAX_INT4,
      status: 404,
      code: "NOT_FOUND",
    },
    {
      name: "an unknown channel → 404",
      actor: () => admin,
      channel: async () => MAX_INT4,
      userId: () => targets[2]!.user.id,
      status: 404,
      code: "NOT_FOUND",
    },
  ];

  test.each(refusals)("$name, nothing changed, nothing delivered to the would-be member", async ({ actor, channel: channelOf, userId, status, code }) => {
    const channelId = await channelOf();
    const targetTabs = await tabs(targets[2]!);
    const before = await snapshot();
    await expectError(await api("POST", `/api/channels/${channelId}/members`, actor().token, { userId: userId() }), status, code);
    expect(await snapshot()).toEqual(before);
    const recorders = targetTabs.map(record);
    // Traffic the would-be member must not see, from the actor where it is a member (ignored where it is not).
    if (channelId !== GENERAL) await api("POST", "/api/messages", actor().token, { content: "not for targets[2]", channelId }).then((r) => r.body?.cancel());
    await expectOnlyMarker(recorders);
  });

  const badBodies: Array<{ name: string; body: unknown; path?: string; code?: string }> = [
    { name: "{}", body: {}, path: "userId" },
    { name: "userId a string", body: { userId: "5" }, path: "userId" },
    { name: "userId 1.5", body: { userId: 1.5 }, path: "userId" },
    { name: "userId 0", body: { userId: 0 }, path: "userId" },
    { name: "userId -1", body: { userId: -1 }, path: "userId" },
    { name: "userId null", body: { userId: null }, path: "userId" },
    { name: "userId true", body: { userId: true }, path: "userId" },
    { name: "userId an array", body: { userId: [5] }, path: "userId" },
    { name: "userId 2147483648 (beyond any id)", body: { userId: MAX_INT4 + 1 }, path: "userId" },
    { name: "userId 1e20", body: { userId: 1e20 }, path: "userId" },
    { name: "an array body", body: [{ userId: 5 }], path: "(root)" },
    { name: "a number body", body: 5, path: "(root)" },
    { name: "not JSON", body: new Raw("{userId: 5}"), code: "BAD_JSON" },
  ];

  test.each(badBodies)("bad body: $name → 400, nothing changed", async ({ body, path, code }) => {
    const before = await snapshot();
    await expectError(await api("POST", `/api/channels/${channel.id}/members`, owner.token, body), 400, code ?? "VALIDATION_FAILED", path);
    expect(await snapshot()).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------
// 6. Direct channels

describe("POST /api/direct/:userId", () => {
  let alice: Registered;
  let bob: Registered;
  let eve: Registered;
  beforeAll(async () => {
    [alice, bob, eve] = await Promise.all([t.register(), t.register(), t.register()]);
  });

  test("201 the first time, then 200 with the same channel from either side; named after the other user; one row, both members", async () => {
    const created: Channel = await expectStatus(await api("POST", `/api/direct/${bob.user.id}`, alice.token), 201);
    expectChannel(created, { name: bob.user.username, kind: "direct", unread: 0 });
    const again = await direct(alice, bob, 200);
    expect(again).toEqual(created);
    const fromBob = await direct(bob, alice, 200);
    expect(fromBob).toEqual({ ...created, name: alice.user.username });

    const key = [alice.user.id, bob.user.id].sort((a, b) => a - b).join(":");
    const rows = await t.database.sql`SELECT id, kind::text AS kind, direct_key FROM channels WHERE direct_key = ${key}`;
    expect([...rows]).toEqual([{ id: created.id, kind: "direct", direct_key: key }]);
    const members = await t.database.sql`SELECT user_id FROM channel_members WHERE channel_id = ${created.id} ORDER BY user_id`;
    expect(members.map((m: { user_id: number }) => m.user_id)).toEqual([alice.user.id, bob.user.id].sort((a, b) => a - b));

    expect((await listChannels(alice)).find((c) => c.id === created.id)).toEqual(created);
    expect((await listChannels(bob)).find((c) => c.id === created.id)).toEqual(fromBob);
    expect((await listChannels(eve)).map((c) => c.id)).not.toContain(created.id);
  });

  test("5 concurrent calls from each of the two users: one channel row, one 201, every answer the same channel", async () => {
    const [x, y] = await Promise.all([t.register(), t.register()]);
    const calls = Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? api("POST", `/api/direct/${y.user.id}`, x.token) : api("POST", `/api/direct/${x.user.id}`, y.token)));
    const responses = await Promise.all(calls);
    const bodies: Channel[] = await Promise.all(responses.map((r) => r.json() as Promise<Channel>));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 200)).toHaveLength(9);
    const channelIds = new Set(bodies.map((b) => b.id));
    expect(channelIds.size).toBe(1);
    for (const [i, body] of bodies.entries()) expectChannel(body, { id: bodies[0]!.id, name: (i % 2 === 0 ? y : x).user.username, kind: "direct", unread: 0 });
    const key = [x.user.id, y.user.id].sort((a, b) => a - b).join(":");
    const rows = await t.database.sql`SELECT id FROM channels WHERE direct_key = ${key}`;
    expect([...rows]).toEqual([{ id: bodies[0]!.id }]);
    const [members] = await t.database.sql`SELECT count(*)::int AS n FROM channel_members WHERE channel_id = ${bodies[0]!.id}`;
    expect(members).toEqual({ n: 2 });
  });

  test("both users' live sockets (different transports) receive its messages at once; a third user's do not", async () => {
    const [x, y] = await Promise.all([t.register(), t.register()]);
    const xSocket = await connect(x, "polling");
    const ySocket = await connect(y, "websocket");
    const eveTabs = await tabs(eve);
    const recorders = [xSocket, ySocket].map(record);
    const outsiders = eveTabs.map(record);
    const dm = await direct(x, y, 201);
    const fromX = await sendIn(xSocket, dm.id, "hi y");
    const fromY = await sendIn(ySocket, dm.id, "hi x");
    expectMessageShape(fromX, x.user, "hi y", dm.id);
    expectMessageShape(fromY, y.user, "hi x", dm.id);
    const both: Recorded[] = [
      ["channel:joined", { channelId: dm.id }],
      ["message", fromX],
      ["message", fromY],
    ];
    await expectOnlyMarker([...recorders, ...outsiders], [both, both, [], []]);
    expect(ids(await historyOf(y, dm.id))).toEqual([fromY.id, fromX.id]);
  });

  test("a third user can neither read, post (socket or REST), join nor add members: 404 everywhere; nothing stored", async () => {
    const dm = await direct(alice, bob, 200);
    await postIn(alice, dm.id, "between us");
    const eveSocket = await connect(eve, "websocket");
    const recorders = [...(await tabs(alice)), ...(await tabs(bob))].map(record);
    const before = await snapshot();
    await expectError(await api("GET", `/api/channels/${dm.id}/messages`, eve.token), 404, "NOT_FOUND");
    await expectError(await api("POST", "/api/messages", eve.token, { content: "hi", channelId: dm.id }), 404, "NOT_FOUND");
    expect(await sendWithAck(eveSocket, { content: "hi", channelId: dm.id })).toEqual({ ok: false, error: { code: "NOT_FOUND", message: expect.any(String) } });
    await expectError(await api("POST", `/api/channels/${dm.id}/join`, eve.token), 404, "NOT_FOUND");
    await expectError(await api("POST", `/api/channels/${dm.id}/members`, eve.token, { userId: eve.user.id }), 404, "NOT_FOUND");
    await expectError(await api("POST", `/api/channels/${dm.id}/read`, eve.token, { messageId: 1 }), 404, "NOT_FOUND");
    expect(await snapshot()).toEqual(before);
    await expectOnlyMarker(recorders);
  });

  test("with yourself → 403; with an unknown user → 404; nothing stored", async () => {
    const before = await snapshot();
    await expectError(await api("POST", `/api/direct/${alice.user.id}`, alice.token), 403, "FORBIDDEN");
    await expectError(await api("POST", `/api/direct/${MAX_INT4}`, alice.token), 404, "NOT_FOUND");
    expect(await snapshot()).toEqual(before);
  });

  test("a direct channel cannot be left, so it stays reachable from both sides", async () => {
    const dm = await direct(alice, bob, 200);
    const before = await snapshot();
    await expectError(await api("POST", `/api/channels/${dm.id}/leave`, alice.token), 403, "FORBIDDEN");
    expect(await snapshot()).toEqual(before);
    expect((await direct(alice, bob, 200)).id).toBe(dm.id);
    expect(await direct(bob, alice, 200)).toMatchObject({ id: dm.id, name: alice.user.username });
  });
});

// ---------------------------------------------------------------------------------------
// 7. Per-channel history

describe("GET /api/channels/:id/messages", () => {
  let alice: Registered;
  let bob: Registered;
  let channel: Channel;
  /** The channel's 30 messages, oldest first. */
  let seeded: ChatMessage[];
  /** Messages stored in general in between. */
  let elsewhere: ChatMessage[];

  beforeAll(async () => {
    [alice, bob] = await Promise.all([t.register(), t.register()]);
    channel = await createChannel(alice, "public");
    await join(bob, channel.id);
    seeded = [];
    elsewhere = [];
    for (let i = 0; i < 30; i++) {
      seeded.push(asHistory(await postIn(i % 2 === 0 ? alice : bob, channel.id, `h ${i}`)));
      if (i % 5 === 2) elsewhere.push(await postIn(alice, GENERAL, `elsewhere ${i}`));
    }
  });

  const newestFirst = (list: ChatMessage[]) => [...list].reverse();
  const H = () => seeded;

  test("no cursor: the newest (default 50) newest first, full messages, only this channel's", async () => {
    const all = await historyOf(bob, channel.id);
    expect(all).toEqual(newestFirst(H()));
    for (const m of all) expectMessageShape(m, m.userId === alice.user.id ? alice.user : bob.user, m.content, channel.id, { history: true });
    expect(ids(all)).not.toEqual(expect.arrayContaining([elsewhere[0]!.id]));
  });

  test("exact id sequences for limit, before and after", async () => {
    const h = ids(H());
    const cases: Array<[query: string, expected: number[]]> = [
      ["?limit=10", h.slice(20).reverse()],
      ["?limit=1", [h[29]!]],
      ["?limit=200", [...h].reverse()],
      [`?before=${h[20]}`, h.slice(0, 20).reverse()],
      [`?before=${h[20]}&limit=5`, h.slice(15, 20).reverse()],
      [`?before=${h[0]}`, []],
      [`?after=${h[5]}&limit=7`, h.slice(6, 13)],
      [`?after=${h[5]}`, h.slice(6)],
      [`?after=${h[29]}`, []],
      [`?after=${h[28]}&limit=50`, [h[29]!]],
      [`?after=${h[0]! - 1}`, h],
      // A cursor that is another channel's message id is a position, nothing more.
      [`?after=${elsewhere[0]!.id}&limit=3`, h.filter((id) => id > elsewhere[0]!.id).slice(0, 3)],
      [`?before=${elsewhere[1]!.id}`, h.filter((id) => id < elsewhere[1]!.id).reverse()],
      [`?before=${MAX_INT4}&limit=2`, [h[29]!, h[28]!]],
    ];
    for (const [query, expected] of cases) {
      expect({ query, ids: ids(await historyOf(alice, channel.id, query)) }).toEqual({ query, ids: expected });
    }
  });

  test("paging back with before, then forward with after, visits every message exactly once", async () => {
    const back: number[] = [];
    let cursor = "";
    for (;;) {
      const page = await historyOf(alice, channel.id, `?limit=7${cursor}`);
      back.push(...ids(page));
      if (page.length < 7) break;
      cursor = `&before=${page.at(-1)!.id}`;
    }
    expect(back).toEqual(ids(newestFirst(H())));
    const forward: number[] = [];
    let after = 0;
    for (;;) {
      const page = await historyOf(alice, channel.id, `?limit=8${after ? `&after=${after}` : `&after=${H()[0]!.id - 1}`}`);
      forward.push(...ids(page));
      if (page.length < 8) break;
      after = page.at(-1)!.id;
    }
    expect(forward).toEqual(ids(H()));
  });

  test("general's history does not include the channel's messages", async () => {
    const general = await historyOf(alice, GENERAL, "?limit=200");
    for (const m of H()) expect(ids(general)).not.toContain(m.id);
    expect(ids(general)).toEqual(expect.arrayContaining(ids(elsewhere)));
  });

  const badQueries: Array<[query: string, path: string]> = [
    ["?limit=0", "limit"],
    ["?limit=201", "limit"],
    ["?limit=-1", "limit"],
    ["?limit=1.5", "limit"],
    ["?limit=abc", "limit"],
    ["?limit=", "limit"],
    ["?limit=1e2", "limit"],
    ["?before=0", "before"],
    ["?before=-5", "before"],
    ["?before=abc", "before"],
    ["?before=1e3", "before"],
    ["?before=", "before"],
    ["?before=2147483648", "before"],
    ["?after=00", "after"],
    ["?after=x", "after"],
    ["?after=1.5", "after"],
    ["?after=99999999999", "after"],
    ["?before=10&after=5", "after"],
  ];

  test.each(badQueries)("%s → 400 VALIDATION_FAILED naming %s, nothing changed", async (query, path) => {
    const before = await snapshot();
    await expectError(await api("GET", `/api/channels/${channel.id}/messages${query}`, alice.token), 400, "VALIDATION_FAILED", path);
    expect(await snapshot()).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------
// 8. Read markers and unread counts

describe("read markers", () => {
  let alice: Registered;
  let bob: Registered;
  let carol: Registered;
  let channel: Channel;
  let fromAlice: ChatMessage[];
  let fromBob: ChatMessage[];

  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
    channel = await createChannel(alice, "public");
    await join(bob, channel.id);
    fromAlice = [];
    fromBob = [];
    for (let i = 0; i < 5; i++) {
      fromAlice.push(await postIn(alice, channel.id, `a${i}`));
      if (i < 2) fromBob.push(await postIn(bob, channel.id, `b${i}`));
    }
  });

  test("unread counts other users' messages after the marker; one's own never count", async () => {
    expect(await unreadIn(bob, channel.id)).toBe(5);
    expect(await unreadIn(alice, channel.id)).toBe(2);
    // Seven messages: seven events in its log.
    expect((await listChannels(bob)).find((c) => c.id === channel.id)).toEqual({ ...channel, unread: 5, seq: 7 });
  });

  test("POST read → 204; the marker is stored and unread follows; bob's sockets get channel:read, alice's get nothing", async () => {
    const bobTabs = (await tabs(bob)).map(record);
    const aliceTabs = (await tabs(alice)).map(record);
    const target = fromAlice[2]!;
    await markRead(bob, channel.id, target.id);
    expect(await memberRow(channel.id, bob.user.id)).toEqual({ last_read_id: target.id });
    // After a2: a3 and a4 are alice's; b1 came before a2 (and is bob's own anyway).
    expect(await unreadIn(bob, channel.id)).toBe(2);
    const event: Recorded = ["channel:read", { channelId: channel.id, lastReadId: target.id }];
    for (const r of bobTabs) expect(await r.until(([e]) => e === "channel:read")).toEqual([event]);
    await expectOnlyMarker([...bobTabs, ...aliceTabs], [[event], [event], [], []]);
    const payload = bobTabs[0]!.events[0]![1] as object;
    expect(Object.keys(payload).sort()).toEqual(["channelId", "lastReadId"]);
  });

  test("the marker never moves backwards (an older id, or 0, changes nothing)", async () => {
    const marker = (await memberRow(channel.id, bob.user.id))!.last_read_id;
    expect(marker).toBe(fromAlice[2]!.id);
    for (const older of [fromAlice[0]!.id, fromBob[0]!.id, 0]) {
      await markRead(bob, channel.id, older);
      expect(await memberRow(channel.id, bob.user.id)).toEqual({ last_read_id: marker });
      expect(await unreadIn(bob, channel.id)).toBe(2);
    }
  });

  test("a messageId past the channel's newest is clamped to the newest, so later messages still count", async () => {
    // A newer message elsewhere must not be where the clamp lands.
    const elsewhere = await postIn(alice, GENERAL, "newer, in general");
    const newest = fromAlice[4]!;
    expect(elsewhere.id).toBeGreaterThan(newest.id);
    const tab = record(await connect(bob, "websocket"));
    await markRead(bob, channel.id, MAX_INT4);
    expect(await memberRow(channel.id, bob.user.id)).toEqual({ last_read_id: newest.id });
    expect(await tab.until(([e]) => e === "channel:read")).toEqual([["channel:read", { channelId: channel.id, lastReadId: newest.id }]]);
    expect(await unreadIn(bob, channel.id)).toBe(0);
    const next = await postIn(alice, channel.id, "after the clamp");
    expect(await unreadIn(bob, channel.id)).toBe(1);
    await markRead(bob, channel.id, next.id);
    expect(await unreadIn(bob, channel.id)).toBe(0);
  });

  test("markers are per user and per channel", async () => {
    const aliceBefore = await unreadIn(alice, channel.id);
    const generalBefore = await unreadIn(bob, GENERAL);
    await markRead(bob, channel.id, MAX_INT4);
    expect(await unreadIn(alice, channel.id)).toBe(aliceBefore);
    expect(await unreadIn(bob, GENERAL)).toBe(generalBefore);
    await markRead(alice, channel.id, fromBob[1]!.id);
    expect(await unreadIn(alice, channel.id)).toBe(0);
  });

  test("a newly joined member starts at unread 0, and counts what comes after", async () => {
    expect(await countIn(channel.id)).toBeGreaterThan(0);
    const joined = await join(carol, channel.id);
    expect(joined.unread).toBe(0);
    expect(await unreadIn(carol, channel.id)).toBe(0);
    await postIn(alice, channel.id, "for carol");
    await postIn(bob, channel.id, "for carol too");
    await postIn(carol, channel.id, "carol's own");
    expect(await unreadIn(carol, channel.id)).toBe(2);
  });

  test("a private channel's creator starts at 0 and counts the added member's messages", async () => {
    const priv = await createChannel(alice, "private");
    await addMember(alice, priv.id, bob.user.id);
    expect(await unreadIn(bob, priv.id)).toBe(0);
    await postIn(bob, priv.id);
    expect(await unreadIn(alice, priv.id)).toBe(1);
    expect(await unreadIn(bob, priv.id)).toBe(0);
  });

  test("non-members: 404 for a private or unknown channel, 403 for a public one; nothing changed, no channel:read", async () => {
    const priv = await createChannel(alice, "private");
    const m = await postIn(alice, priv.id);
    const outsider = await t.register();
    const recorders = (await tabs(outsider)).map(record);
    const before = await snapshot();
    await expectError(await api("POST", `/api/channels/${priv.id}/read`, outsider.token, { messageId: m.id }), 404, "NOT_FOUND");
    await expectError(await api("POST", `/api/channels/${channel.id}/read`, outsider.token, { messageId: m.id }), 403, "FORBIDDEN");
    await expectError(await api("POST", `/api/channels/${MAX_INT4}/read`, outsider.token, { messageId: m.id }), 404, "NOT_FOUND");
    expect(await snapshot()).toEqual(before);
    await expectOnlyMarker(recorders);
  });

  const badBodies: Array<{ name: string; body: unknown; path?: string; code?: string }> = [
    { name: "{}", body: {}, path: "messageId" },
    { name: "messageId a string", body: { messageId: "5" }, path: "messageId" },
    { name: "messageId -1", body: { messageId: -1 }, path: "messageId" },
    { name: "messageId 1.5", body: { messageId: 1.5 }, path: "messageId" },
    { name: "messageId null", body: { messageId: null }, path: "messageId" },
    { name: "messageId an object", body: { messageId: { id: 1 } }, path: "messageId" },
    { name: "messageId 2147483648 (beyond any id)", body: { messageId: MAX_INT4 + 1 }, path: "messageId" },
    { name: "messageId 1e20", body: { messageId: 1e20 }, path: "messageId" },
    { name: "an array body", body: [{ messageId: 1 }], path: "(root)" },
    { name: "not JSON", body: new Raw("messageId=1"), code: "BAD_JSON" },
  ];

  test.each(badBodies)("bad body: $name → 400, nothing changed, no channel:read", async ({ body, path, code }) => {
    const recorders = (await tabs(bob)).map(record);
    const before = await snapshot();
    await expectError(await api("POST", `/api/channels/${channel.id}/read`, bob.token, body), 400, code ?? "VALIDATION_FAILED", path);
    expect(await snapshot()).toEqual(before);
    await expectOnlyMarker(recorders);
  });
});

// ---------------------------------------------------------------------------------------
// 9. Ordering under concurrency, 10. Catch-up after a reconnect

/** Collects the `message` events of one channel on a socket; `ready(n)` resolves at n of them. */
function collect(socket: ChatClient, channelId: number) {
  const got: ChatMessage[] = [];
  let waiter: { n: number; resolve: () => void } | undefined;
  socket.on("message", (m) => {
    if (m.channelId !== channelId) return;
    got.push(m);
    if (waiter && got.length >= waiter.n) waiter.resolve();
  });
  return {
    got,
    ready(n: number, ms = 20_000): Promise<void> {
      if (got.length >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} messages within ${ms} ms`)), ms);
        waiter = {
          n,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
      });
    },
  };
}

const strictlyIncreasing = (list: number[]) => list.every((id, i) => i === 0 || id > list[i - 1]!);

describe("ordering", () => {
  test("20 concurrent senders on mixed transports, 500 messages in bursts: every receiver gets all 500 once, in strictly increasing id order", async () => {
    const users = await Promise.all(Array.from({ length: 23 }, () => t.register()));
    const owner = users[0]!;
    const channel = await createChannel(owner, "public");
    await Promise.all(users.slice(1).map((u) => join(u, channel.id)));
    const senders = await Promise.all(users.slice(0, 20).map((u, i) => connect(u, transports[i % 2]!)));
    const observers = await Promise.all(users.slice(20).map((u, i) => connect(u, (["polling", "websocket", "websocket"] as const)[i]!)));
    const receivers = [...observers, ...senders].map((s) => collect(s, channel.id));

    const started = performance.now();
    const acked: ChatMessage[][] = await Promise.all(
      senders.map(async (socket, s) => {
        const mine: ChatMessage[] = [];
        for (let burst = 0; burst < 5; burst++) {
          const acks = await Promise.all(
            Array.from({ length: 5 }, (_, k) => sendWithAck(socket, { content: `s${s} b${burst} k${k}`, channelId: channel.id }, 20_000) as Promise<Ack>),
          );
          for (const ack of acks) {
            expect(ack.ok).toBe(true);
            if (ack.ok) mine.push(ack.message);
          }
        }
        return mine;
      }),
    );
    const sentIds = acked.flat().map((m) => m.id);
    expect(sentIds).toHaveLength(500);
    expect(new Set(sentIds).size).toBe(500);
    const expected = [...sentIds].sort((a, b) => a - b);

    await Promise.all(receivers.map((r) => r.ready(500)));
    const elapsed = performance.now() - started;
    // Nothing more after the 500th: a marker in the same channel is the next one each receiver sees.
    const marker = await postIn(owner, channel.id, "ordering marker");
    await Promise.all(receivers.map((r) => r.ready(501)));
    for (const [i, r] of receivers.entries()) {
      const got = ids(r.got);
      expect({ receiver: i, increasing: strictlyIncreasing(got) }).toEqual({ receiver: i, increasing: true });
      expect(got).toEqual([...expected, marker.id]);
    }
    // Every sender's own messages arrived in the order its acks say they were stored.
    const stored = await t.database.sql`SELECT id FROM messages WHERE channel_id = ${channel.id} ORDER BY id`;
    expect(stored.map((r: { id: number }) => r.id)).toEqual([...expected, marker.id]);
    console.log(`ordering: 500 messages from 20 senders to ${receivers.length} receivers in ${elapsed.toFixed(0)} ms`);
  });
});

describe("catch-up after a reconnect", () => {
  test("300 messages sent while a client was away: paging after=<last seen>&limit=200 returns each exactly once, in order; the new socket receives live again", async () => {
    const [reader, ...writers] = await Promise.all(Array.from({ length: 4 }, () => t.register()));
    const channel = await createChannel(writers[0]!, "public");
    await Promise.all([reader!, writers[1]!, writers[2]!].map((u) => join(u, channel.id)));
    const writerSockets = await Promise.all(writers.map((u, i) => connect(u, transports[i % 2]!)));

    const readerSocket = await connect(reader!, "websocket");
    const seen = collect(readerSocket, channel.id);
    for (let i = 0; i < 5; i++) await sendIn(writerSockets[i % 3]!, channel.id, `seen ${i}`);
    await seen.ready(5);
    const lastSeen = seen.got.at(-1)!.id;
    readerSocket.disconnect();

    // 300 in the channel from three writers at once (bursts of 10), with general traffic in between.
    const missed: ChatMessage[] = (
      await Promise.all(
        writerSockets.map(async (socket, w) => {
          const mine: ChatMessage[] = [];
          for (let burst = 0; burst < 10; burst++) {
            const acks = (await Promise.all(
              Array.from({ length: 10 }, (_, k) => sendWithAck(socket, { content: `missed w${w} b${burst} k${k}`, channelId: channel.id }, 20_000)),
            )) as Ack[];
            for (const ack of acks) if (ack.ok) mine.push(ack.message);
            if (burst % 3 === 0) await sendIn(socket, GENERAL, `general noise ${w}/${burst}`);
          }
          return mine;
        }),
      )
    )
      .flat()
      .sort((a, b) => a.id - b.id);
    expect(missed).toHaveLength(300);
    expect(seen.got).toHaveLength(5);

    const again = await connect(reader!, "polling");
    const live = collect(again, channel.id);
    const pages: number[] = [];
    const caughtUp: ChatMessage[] = [];
    let after = lastSeen;
    for (;;) {
      const page = await historyOf(reader!, channel.id, `?after=${after}&limit=200`);
      pages.push(page.length);
      caughtUp.push(...page);
      if (page.length < 200) break;
      after = page.at(-1)!.id;
    }
    expect(pages).toEqual([200, 100]);
    expect(caughtUp).toEqual(missed.map(asHistory));
    expect(new Set(ids(caughtUp)).size).toBe(300);

    const fresh = await sendIn(writerSockets[1]!, channel.id, "welcome back");
    await live.ready(1);
    expect(live.got).toEqual([fresh]);
  });
});

describe("a newcomer to general", () => {
  test("starts with nothing unread, however much general already holds", async () => {
    const old = await t.register(uniqueName("old"));
    await postIn(old, undefined);
    await postIn(old, undefined);
    const newcomer = await t.register(uniqueName("new"));
    const general = (await listChannels(newcomer)).find((c) => c.id === GENERAL);
    expect(general?.unread).toBe(0);
    // And the marker works from there: the next message by someone else is unread.
    await postIn(old, undefined);
    expect((await listChannels(newcomer)).find((c) => c.id === GENERAL)?.unread).toBe(1);
  });
});
