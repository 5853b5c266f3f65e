import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { decode, sign } from "hono/jwt";
import type { ChatMessage, LiveMessage } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { asHistory, expectMessageShape, isMessage, record, type Recorded, type Recorder } from "./helpers/recorder.ts";
import { expectUntilMarker, markerContent } from "./helpers/markers.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, testJwtSecret, transports, type ChatClient, type Registered } from "./helpers/server.ts";
import { now } from "./helpers/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §4 (history) and the REST twin of the socket `message` event, POST /api/messages,
// which goes through the same service: stored, committed, then broadcast to every socket.

const t = await startTestServer();

// ---------------------------------------------------------------------------------------
// Helpers

const { connect } = socketTracker(t);

/** One observer socket per transport, closed after the test. */
async function observers(user: Registered): Promise<ChatClient[]> {
  return Promise.all(transports.map((transport) => connect(user, transport)));
}

function post(token: string | undefined, body: RequestInit["body"], headers: Record<string, string> = { "content-type": "application/json" }) {
  return fetch(`${t.url}/api/messages`, {
    method: "POST",
    headers: { ...headers, ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body,
  });
}

const postJson = (token: string | undefined, body: unknown) => post(token, JSON.stringify(body));

function history(token: string | undefined, query = "") {
  return fetch(`${t.url}/api/messages${query}`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
}

async function historyIds(token: string, query = ""): Promise<number[]> {
  const res = await history(token, query);
  expect(res.status).toBe(200);
  return ((await res.json()) as ChatMessage[]).map((m) => m.id);
}

/** The marker technique (helpers/markers.ts), the marker posted (to general) with `token`. */
const expectOnlyMarker = (token: string, recorders: Recorder[], before?: Recorded[][]) =>
  expectUntilMarker(
    async () => {
      const res = await postJson(token, { content: markerContent() });
      expect(res.status).toBe(201);
      return (await res.json()) as ChatMessage;
    },
    recorders,
    before,
  );

async function countMessages(): Promise<number> {
  const [row] = await t.database.sql`SELECT count(*)::int AS n FROM messages`;
  return (row as { n: number }).n;
}

async function storedRow(id: number) {
  const rows = await t.database.sql`SELECT id, user_id, content, client_id, created_at FROM messages WHERE id = ${id}`;
  return rows[0] as { id: number; user_id: number; content: string; client_id: string | null; created_at: Date } | undefined;
}

// ---------------------------------------------------------------------------------------
// History. Runs first, on this file's fresh database, so the 60 messages below are all there is.

describe("GET /api/messages", () => {
  let alice: Registered;
  let bob: Registered;
  /** Ids of the 60 seeded messages, oldest first. */
  let ids: number[];
  /** The broadcast each seeded message produced, by id. */
  const broadcasts = new Map<number, ChatMessage>();

  beforeAll(async () => {
    [alice, bob] = await Promise.all([t.register(), t.register()]);
    const watcher = await t.connect(alice.token, "websocket");
    const recorder = record(watcher);
    ids = [];
    for (let i = 0; i < 60; i++) {
      const author = i % 2 === 0 ? alice : bob;
      const res = await postJson(author.token, { content: `history ${i}` });
      expect(res.status).toBe(201);
      ids.push(((await res.json()) as ChatMessage).id);
    }
    for (const [event, payload] of await recorder.until(isMessage(ids.at(-1)!))) {
      if (event === "message") broadcasts.set((payload as ChatMessage).id, payload as ChatMessage);
    }
    recorder.stop();
    watcher.disconnect();
    // The premise of the exact sequences below: nothing else is stored.
    const all = (await t.database.sql`SELECT id FROM messages ORDER BY id`) as { id: number }[];
    expect(all.map((r) => r.id)).toEqual(ids);
  });

  const newestFirst = (list: number[]) => [...list].reverse();

  test("requires a token: 401 UNAUTHORIZED in the error shape, for every kind of bad token", async () => {
    const expired = await sign({ ...decode(alice.token).payload, iat: now() - 3600, exp: now() - 60 }, testJwtSecret, "HS256");
    const foreign = await sign({ ...decode(alice.token).payload, iat: now(), exp: now() + 600 }, "another-secret-that-is-at-least-32-characters", "HS256");
    const headerSets: Record<string, string>[] = [
      {},
      { authorization: "" },
      { authorization: "Bearer" },
      { authorization: "Bearer garbage" },
      { authorization: `Basic ${btoa("alice:password")}` },
      { authorization: alice.token },
      { authorization: `Bearer ${expired}` },
      { authorization: `Bearer ${foreign}` },
    ];
    for (const headers of headerSets) {
      const res = await fetch(`${t.url}/api/messages`, { headers });
      await expectError(res, 401, "UNAUTHORIZED");
    }
  });

  test("no cursor: the newest 50 (the default limit), newest first", async () => {
    expect(await historyIds(alice.token)).toEqual(newestFirst(ids).slice(0, 50));
  });

  test("no cursor with a limit: the newest `limit`, newest first; limit 1 and 200 are the bounds", async () => {
    expect(await historyIds(alice.token, "?limit=10")).toEqual(newestFirst(ids).slice(0, 10));
    expect(await historyIds(alice.token, "?limit=1")).toEqual([ids[59]!]);
    expect(await historyIds(alice.token, "?limit=200")).toEqual(newestFirst(ids));
  });

  test("?before=id: older than id, newest first", async () => {
    expect(await historyIds(alice.token, `?before=${ids[30]}`)).toEqual(newestFirst(ids.slice(0, 30)));
    expect(await historyIds(alice.token, `?before=${ids[59]}&limit=5`)).toEqual(newestFirst(ids.slice(54, 59)));
    // Default limit applies: 59 older than the newest, 50 of them.
    expect(await historyIds(alice.token, `?before=${ids[59]}`)).toEqual(newestFirst(ids.slice(9, 59)));
    expect(await historyIds(alice.token, `?before=${ids[0]}`)).toEqual([]);
    // An id past the newest is a valid cursor: everything is older.
    expect(await historyIds(alice.token, "?before=2147483647&limit=3")).toEqual(newestFirst(ids).slice(0, 3));
  });

  test("scrolling back page by page with before visits every message once", async () => {
    const seen: number[] = [];
    let query = "?limit=7";
    // 60 messages in pages of 7: 9 pages with messages, then an empty one. Bounded, so a cursor that never advances fails here.
    for (let pages = 0; pages < 12; pages++) {
      const page = await historyIds(alice.token, query);
      if (page.length === 0) break;
      seen.push(...page);
      query = `?limit=7&before=${page.at(-1)}`;
    }
    expect(seen).toEqual(newestFirst(ids));
  });

  test("?after=id: newer than id, oldest first", async () => {
    expect(await historyIds(alice.token, `?after=${ids[50]}`)).toEqual(ids.slice(51));
    expect(await historyIds(alice.token, `?after=${ids[50]}&limit=3`)).toEqual(ids.slice(51, 54));
    // Default limit applies: 55 newer, the oldest 50 of them.
    expect(await historyIds(alice.token, `?after=${ids[4]}`)).toEqual(ids.slice(5, 55));
    expect(await historyIds(alice.token, `?after=${ids[59]}`)).toEqual([]);
  });

  test("the same message shape as the broadcast, with each author's id and username", async () => {
    const res = await history(alice.token, "?limit=200");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const list = (await res.json()) as ChatMessage[];
    expect(list).toHaveLength(60);
    for (const message of list) {
      const i = ids.indexOf(message.id);
      const author = i % 2 === 0 ? alice : bob;
      expectMessageShape(message, author.user, `history ${i}`, 1, { history: true });
      // The broadcast is the history entry with its event number (api.md §11).
      const { seq, ...broadcast } = broadcasts.get(message.id)! as ChatMessage & { seq: number };
      expect(seq).toBeGreaterThan(0);
      expect(message).toEqual(broadcast);
    }
  });

  const badQueries: Array<[query: string, field: string]> = [
    ["?limit=0", "limit"],
    ["?limit=201", "limit"],
    ["?limit=abc", "limit"],
    ["?limit=1.5", "limit"],
    ["?limit=-1", "limit"],
    ["?limit=", "limit"],
    ["?limit=1e2", "limit"],
    ["?before=0", "before"],
    ["?before=abc", "before"],
    ["?before=-1", "before"],
    ["?before=1.5", "before"],
    ["?before=", "before"],
    ["?before=99999999999", "before"],
    ["?after=abc", "after"],
    ["?after=-1", "after"],
    ["?after=00", "after"],
    ["?before=10&after=5", "after"],
  ];

  test.each(badQueries)("%s → 400 VALIDATION_FAILED naming %s", async (query, field) => {
    await expectError(await history(alice.token, query), 400, "VALIDATION_FAILED", field);
  });
});

// ---------------------------------------------------------------------------------------
// POST /api/messages

describe("POST /api/messages", () => {
  let alice: Registered;
  let bob: Registered;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([t.register(), t.register()]);
  });

  test("201 with the message; it is committed, then broadcast to every connected socket on both transports, the poster's own included", async () => {
    const sockets = [...(await observers(bob)), ...(await observers(alice))];
    const recorders = sockets.map(record);
    const res = await postJson(alice.token, { content: "  over REST \n " });
    expect(res.status).toBe(201);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const message = (await res.json()) as ChatMessage;
    expectMessageShape(message, alice.user, "over REST");
    expect(await storedRow(message.id)).toEqual({
      id: message.id,
      user_id: alice.user.id,
      content: "over REST",
      client_id: null,
      created_at: new Date(message.timestamp),
    });
    const once: Recorded[] = [["message", message]];
    await expectOnlyMarker(bob.token, recorders, recorders.map(() => once));
  });

  test("the row is visible to another connection when the broadcast arrives", async () => {
    const [socket] = await observers(bob);
    const arrival = new Promise<Awaited<ReturnType<typeof storedRow>>>((resolve, reject) => {
      socket!.once("message", (m) => void storedRow(m.id).then(resolve, reject));
    });
    const res = await postJson(alice.token, { content: "visible" });
    expect(res.status).toBe(201);
    const message = (await res.json()) as ChatMessage;
    expect(await arrival).toMatchObject({ id: message.id, user_id: alice.user.id, content: "visible" });
  });

  test("userId equal to the token's user is accepted; the stored author is the token's user", async () => {
    const res = await postJson(alice.token, { content: "mine", userId: alice.user.id });
    expect(res.status).toBe(201);
    const message = (await res.json()) as ChatMessage;
    expect(message.userId).toBe(alice.user.id);
    expect((await storedRow(message.id))?.user_id).toBe(alice.user.id);
  });

  test("4000 code points (emoji) are accepted", async () => {
    const content = "😀".repeat(4000);
    const res = await postJson(alice.token, { content });
    expect(res.status).toBe(201);
    expect(((await res.json()) as ChatMessage).content).toBe(content);
  });

  test("a repeated clientId returns the first message (same id), with no new row and no second broadcast", async () => {
    const sockets = await observers(bob);
    const recorders = sockets.map(record);
    const clientId = crypto.randomUUID();
    const first = await postJson(alice.token, { content: "once", clientId });
    expect(first.status).toBe(201);
    const firstMessage = (await first.json()) as LiveMessage;
    const before = await countMessages();
    const again = await postJson(alice.token, { content: "twice?", clientId });
    expect(again.status).toBe(201);
    // The first message as history shows it: no event number (api.md §11); the first answer had one.
    expect(Number.isInteger(firstMessage.seq) && firstMessage.seq > 0).toBe(true);
    expect(await again.json()).toEqual(asHistory(firstMessage));
    expect(await countMessages()).toBe(before);
    const rows = await t.database.sql`SELECT id, content FROM messages WHERE user_id = ${alice.user.id} AND client_id = ${clientId}`;
    expect([...rows]).toEqual([{ id: firstMessage.id, content: "once" }]);
    const once: Recorded[] = [["message", firstMessage]];
    await expectOnlyMarker(bob.token, recorders, [once, once]);
  });

  test("REST and socket share the idempotency: a clientId used over REST, resent over the socket, returns the same message", async () => {
    const [socket] = await observers(alice);
    const clientId = crypto.randomUUID();
    const res = await postJson(alice.token, { content: "rest first", clientId });
    expect(res.status).toBe(201);
    const message = (await res.json()) as LiveMessage;
    const ack = await sendWithAck(socket!, { content: "socket second", clientId });
    // A repeat answers with the first message as history shows it: without its seq (api.md §11).
    expect(ack).toEqual({ ok: true, message: asHistory(message) });
    // And the other way round.
    const clientId2 = crypto.randomUUID();
    const ack2 = await sendWithAck(socket!, { content: "socket first", clientId: clientId2 });
    expect(ack2.ok).toBe(true);
    const res2 = await postJson(alice.token, { content: "rest second", clientId: clientId2 });
    expect(res2.status).toBe(201);
    expect(await res2.json()).toEqual(asHistory(ack2.message));
  });

  test("the same clientId from two users makes two messages", async () => {
    const clientId = crypto.randomUUID();
    const a = (await (await postJson(alice.token, { content: "a", clientId })).json()) as ChatMessage;
    const b = (await (await postJson(bob.token, { content: "b", clientId })).json()) as ChatMessage;
    expect(a.id).not.toBe(b.id);
    expect([a.userId, b.userId]).toEqual([alice.user.id, bob.user.id]);
  });

  test("without a token: 401, nothing stored", async () => {
    const before = await countMessages();
    await expectError(await postJson(undefined, { content: "anonymous" }), 401, "UNAUTHORIZED");
    await expectError(await postJson("garbage", { content: "anonymous" }), 401, "UNAUTHORIZED");
    expect(await countMessages()).toBe(before);
  });

  // Each row: the raw request, and the status, code and (for VALIDATION_FAILED) the field.
  type BadBody = { name: string; body: (ctx: { bob: Registered }) => RequestInit["body"]; headers?: Record<string, string>; status: number; code: string; path?: string };
  const json = (value: unknown) => () => JSON.stringify(value);
  const badBodies: BadBody[] = [
    { name: "invalid JSON (truncated)", body: () => '{"content":', status: 400, code: "BAD_JSON" },
    { name: "invalid JSON (not JSON at all)", body: () => "hello there", status: 400, code: "BAD_JSON" },
    { name: "invalid JSON (single quotes)", body: () => "{'content':'x'}", status: 400, code: "BAD_JSON" },
    { name: "an empty body", body: () => "", status: 400, code: "BAD_JSON" },
    { name: "JSON sent as text/plain", body: json({ content: "x" }), headers: { "content-type": "text/plain" }, status: 400, code: "BAD_JSON" },
    { name: "JSON sent as a form", body: json({ content: "x" }), headers: { "content-type": "application/x-www-form-urlencoded" }, status: 400, code: "BAD_JSON" },
    { name: "null", body: json(null), status: 400, code: "VALIDATION_FAILED", path: "(root)" },
    { name: "an array", body: json([{ content: "x" }]), status: 400, code: "VALIDATION_FAILED", path: "(root)" },
    { name: "a string", body: json("x"), status: 400, code: "VALIDATION_FAILED", path: "(root)" },
    { name: "a number", body: json(42), status: 400, code: "VALIDATION_FAILED", path: "(root)" },
    { name: "{}", body: json({}), status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: 'content ""', body: json({ content: "" }), status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: 'content "   "', body: json({ content: "   " }), status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: "content of 4001 characters", body: json({ content: "ж".repeat(4001) }), status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: "content a number", body: json({ content: 42 }), status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: "content an object", body: json({ content: { text: "x" } }), status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: "content with a NUL character", body: json({ content: "a\u0000b" }), status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: "content with an unpaired surrogate", body: () => '{"content":"a\\ud800b"}', status: 400, code: "VALIDATION_FAILED", path: "content" },
    { name: "userId a string", body: json({ content: "x", userId: "1" }), status: 400, code: "VALIDATION_FAILED", path: "userId" },
    { name: "userId 1.5", body: json({ content: "x", userId: 1.5 }), status: 400, code: "VALIDATION_FAILED", path: "userId" },
    { name: 'clientId ""', body: json({ content: "x", clientId: "" }), status: 400, code: "VALIDATION_FAILED", path: "clientId" },
    { name: "clientId of 65 characters", body: json({ content: "x", clientId: "k".repeat(65) }), status: 400, code: "VALIDATION_FAILED", path: "clientId" },
    { name: "clientId a number", body: json({ content: "x", clientId: 7 }), status: 400, code: "VALIDATION_FAILED", path: "clientId" },
    { name: "clientId with a NUL character", body: json({ content: "x", clientId: "k\u0000" }), status: 400, code: "VALIDATION_FAILED", path: "clientId" },
    { name: "another user's userId", body: ({ bob }) => JSON.stringify({ content: "x", userId: bob.user.id }), status: 403, code: "FORBIDDEN" },
    { name: "a body over 64 KiB", body: json({ content: "x".repeat(64 * 1024) }), status: 413, code: "PAYLOAD_TOO_LARGE" },
    {
      name: "a body over 64 KiB, streamed without Content-Length",
      body: () =>
        new ReadableStream({
          start(controller) {
            const chunk = new TextEncoder().encode("x".repeat(16 * 1024));
            controller.enqueue(new TextEncoder().encode('{"content":"'));
            for (let i = 0; i < 5; i++) controller.enqueue(chunk);
            controller.enqueue(new TextEncoder().encode('"}'));
            controller.close();
          },
        }),
      status: 413,
      code: "PAYLOAD_TOO_LARGE",
    },
  ];

  test.each(badBodies)("$name → $status $code, nothing stored, nothing broadcast", async ({ body, headers, status, code, path }) => {
    const sockets = await observers(bob);
    const recorders = sockets.map(record);
    const before = await countMessages();
    const res = await post(alice.token, body({ bob }), headers ?? { "content-type": "application/json" });
    await expectError(res, status, code, path);
    expect(await countMessages()).toBe(before);
    await expectOnlyMarker(alice.token, recorders);
    expect(await countMessages()).toBe(before + 1);
  });

  test("__proto__ in the body neither pollutes the server nor changes the author", async () => {
    const res = await post(alice.token, `{"content":"proto","__proto__":{"polluted":1,"userId":${bob.user.id}}}`);
    expect(res.status).toBe(201);
    const message = (await res.json()) as ChatMessage;
    expect(message.userId).toBe(alice.user.id);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
