import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { sign } from "hono/jwt";
import type { ChatMessage, DeletedMessage, HistoryEntry } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { asHistory, isMessage, record, type Recorded, type Recorder } from "./helpers/recorder.ts";
import { expectUntilMarker, markerContent } from "./helpers/markers.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { sendWithAck, startTestServer, transports, uniqueName, type Json, type Registered } from "./helpers/server.ts";
import { now } from "./helpers/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { Raw, apiFor, expectStatus, messagePoster } from "./helpers/http.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §8 edits and deletes: PATCH /api/messages/:id (author only, `message:updated`) and
// DELETE /api/messages/:id (author, moderator, admin; `message:deleted`; tombstones in history;
// audited when a moderator or admin deletes someone else's message, §7), with §0's error shape
// for every refusal. Every refusal also checks that no row changed, no audit row was written and
// nothing was broadcast (the marker technique).

const adminName = uniqueName("admin");
const t = await startTestServer({ env: { ADMIN_USERNAMES: adminName } });
const sql = t.database.sql;

const GENERAL = 1;
const MAX_INT4 = 2_147_483_647;
const peer = "127.0.0.1";
const isoTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

type Ack = { ok: true; message: HistoryEntry } | { ok: false; error: { code: string; message: string } };
type Kind = "general" | "public" | "private" | "direct";
const kinds: Kind[] = ["general", "public", "private", "direct"];

// ---------------------------------------------------------------------------------------
// Helpers

/** Sockets opened by one test, closed after it so no test leaks listeners into the next. */
const { connect } = socketTracker(t);

/** Two tabs of one user: one socket per transport. */
const tabs = (user: Registered) => Promise.all(transports.map((transport) => connect(user, transport)));

/** Recorders on both tabs of each user, in order. */
async function recordTabs(users: Registered[]): Promise<Recorder[]> {
  return (await Promise.all(users.map(tabs))).flat().map((socket) => record(socket));
}

const api = apiFor(t);

const editReq = (user: Registered | string | undefined, id: number | string, body: unknown) =>
  api("PATCH", `/api/messages/${id}`, typeof user === "object" ? user.token : user, body);
const deleteReq = (user: Registered | string | undefined, id: number | string) => api("DELETE", `/api/messages/${id}`, typeof user === "object" ? user.token : user);

/** A successful edit: 200 and the edited message. */
async function edit(user: Registered, id: number, content: string): Promise<ChatMessage> {
  return expectStatus(await editReq(user, id, { content }), 200);
}

/** A successful delete: 204 with an empty body. */
async function remove(user: Registered, id: number): Promise<void> {
  await expectStatus(await deleteReq(user, id), 204);
}

async function createChannel(owner: Registered, kind: "public" | "private", name = uniqueName(kind)): Promise<{ id: number }> {
  return expectStatus(await api("POST", "/api/channels", owner.token, { name, kind }), 201);
}

async function join(user: Registered, channelId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/join`, user.token), 200);
}

async function addMember(actor: Registered, channelId: number, userId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/members`, actor.token, { userId }), 200);
}

/** The one direct channel between two users (created on first use, 201; then 200). */
async function directBetween(user: Registered, other: Registered): Promise<number> {
  const res = await api("POST", `/api/direct/${other.user.id}`, user.token);
  const text = await res.text();
  expect({ ok: res.status === 200 || res.status === 201, text }).toMatchObject({ ok: true });
  return (JSON.parse(text) as { id: number }).id;
}

async function unreadIn(user: Registered, channelId: number): Promise<number | undefined> {
  const list: { id: number; unread: number }[] = await expectStatus(await api("GET", "/api/channels", user.token), 200);
  return list.find((c) => c.id === channelId)?.unread;
}

async function historyOf(user: Registered, channelId: number, query = ""): Promise<HistoryEntry[]> {
  return expectStatus(await api("GET", `/api/channels/${channelId}/messages${query}`, user.token), 200);
}

async function generalHistory(user: Registered, query = ""): Promise<HistoryEntry[]> {
  return expectStatus(await api("GET", `/api/messages${query}`, user.token), 200);
}

/** POST /api/messages. */
const postIn = messagePoster(t);

const isEvent = (name: string, id: number) => ([event, payload]: Recorded) => event === name && (payload as { id: number }).id === id;

/** Everyone is in general and nobody can leave it: the marker technique's channel. */
async function postMarker(): Promise<ChatMessage> {
  return postIn(markerBot, GENERAL, markerContent());
}

/** The marker technique (helpers/markers.ts), the marker posted in general by `markerBot`. */
const expectOnlyMarker = (recorders: Recorder[], before?: Recorded[][]) => expectUntilMarker(postMarker, recorders, before);

type MessageRow = {
  id: number;
  channel_id: number;
  user_id: number;
  content: string;
  client_id: string | null;
  created_at: Date;
  edited_at: Date | null;
  deleted_at: Date | null;
};

async function messageRow(id: number): Promise<MessageRow | undefined> {
  const rows = await sql`SELECT id, channel_id, user_id, content, client_id, created_at, edited_at, deleted_at FROM messages WHERE id = ${id}`;
  return rows[0] as MessageRow | undefined;
}

/** Everything a refused request could have changed: every message row, and the message audit rows. */
async function snapshot() {
  const [messages] = await sql`
    SELECT count(*)::int AS n, coalesce(max(id), 0)::int AS max,
      md5(coalesce(string_agg(id || '|' || content || '|' || coalesce(edited_at::text, '-') || '|' || coalesce(deleted_at::text, '-'), ',' ORDER BY id), '')) AS digest
    FROM messages`;
  const [audit] = await sql`SELECT count(*)::int AS n FROM audit_log WHERE target_type = 'message' OR action LIKE 'message%'`;
  return { messages, audit };
}

type AuditRow = { actor_id: number | null; action: string; target_type: string | null; target_id: string | null; ip: string | null; meta: unknown };

async function auditRowsFor(messageId: number): Promise<AuditRow[]> {
  const rows = await sql`
    SELECT actor_id, action, target_type, target_id, ip, meta FROM audit_log
    WHERE target_id = ${String(messageId)} AND (target_type = 'message' OR action LIKE 'message%') ORDER BY id`;
  return [...rows] as AuditRow[];
}

/** Waits until some backend of this database waits for a lock (a write held up by the test's transaction). */
async function waitForLockWaiter(ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const [row] = await sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`;
    if ((row as { n: number }).n > 0) return;
    if (Date.now() > deadline) throw new Error("no write waited for the test's lock");
    await Bun.sleep(5);
  }
}

/** An edited message, exactly: the original with the new content and an `editedAt`. */
function expectEdited(body: unknown, original: ChatMessage, content: string) {
  expect(Object.keys(body as object).sort()).toEqual(["channelId", "content", "editedAt", "id", "timestamp", "userId", "username"]);
  // The edit's answer is the message as history has it: no event number (that is the broadcast's).
  expect(body).toEqual({ ...asHistory(original), content, editedAt: expect.stringMatching(isoTime) });
  const { editedAt, timestamp } = body as Required<ChatMessage>;
  expect(new Date(editedAt).toISOString()).toBe(editedAt);
  expect(Date.parse(editedAt)).toBeGreaterThanOrEqual(Date.parse(timestamp));
  expect(Math.abs(Date.parse(editedAt) - Date.now())).toBeLessThan(60_000);
}

/** The history shape of a never-edited message: no `editedAt` key. */
const neverEditedKeys = ["channelId", "content", "id", "timestamp", "userId", "username"];
/** The broadcast (and send answer) shape of a never-edited message: its event number too (api.md §11). */
const neverEditedLiveKeys = [...neverEditedKeys, "seq"].sort();

const tombstone = (id: number): DeletedMessage => ({ id, deleted: true });

/** Every tombstone in `entries` is exactly `{ id, deleted: true }`. */
function expectTombstonesExact(entries: HistoryEntry[]) {
  for (const entry of entries) if ("deleted" in entry) expect(Object.keys(entry).sort()).toEqual(["deleted", "id"]);
}

/** Runs a refused request and asserts that no row changed and nothing was broadcast to `watchers`. */
async function expectRefusal(act: () => Promise<void>, watchers: Registered[] = [alice, bob]) {
  const recorders = await recordTabs(watchers);
  const before = await snapshot();
  await act();
  expect(await snapshot()).toEqual(before);
  await expectOnlyMarker(recorders);
}

/** Bad `:id` path segments: not a positive integer as written, or beyond any id. */
const badIds = ["0", "-1", "abc", "1.5", "1e3", "0x10", "%207" /* " 7" */, "2147483648", "99999999999"];

// ---------------------------------------------------------------------------------------
// Cast

const [admin, alice, bob, carol, mod, markerBot] = await Promise.all([
  t.register(adminName),
  t.register(uniqueName("alice")),
  t.register(uniqueName("bob")),
  t.register(uniqueName("carol")),
  t.register(uniqueName("mod")),
  t.register(uniqueName("marker")),
]);
expect(admin.user.role).toBe("admin");
await expectStatus(await api("PATCH", `/api/users/${mod.user.id}`, admin.token, { role: "moderator" }), 200);

const forged = await sign({ sub: alice.user.id, username: alice.user.username, role: "user", sid: "x", exp: now() + 600 }, "another-secret-that-is-at-least-32-chars!!", "HS256");
const badTokens: [string, string | undefined][] = [
  ["no token", undefined],
  ["a malformed token", "not-a-jwt"],
  ["a token signed with another secret", forged],
];

/**
 * A channel of `kind` whose members are alice and bob (general: everyone). Carol and the
 * moderator are outside it, except in general; carol can see a public one (not joined).
 */
async function channelOf(kind: Kind): Promise<number> {
  switch (kind) {
    case "general":
      return GENERAL;
    case "public": {
      const channel = await createChannel(alice, "public");
      await join(bob, channel.id);
      return channel.id;
    }
    case "private": {
      const channel = await createChannel(alice, "private");
      await addMember(alice, channel.id, bob.user.id);
      return channel.id;
    }
    case "direct":
      return directBetween(alice, bob);
  }
}

/** Who gets a channel's broadcasts (alice, bob; everyone in general), and who must not. */
function audienceOf(kind: Kind, extra: Registered[] = []) {
  const insiders = kind === "general" ? [alice, bob, carol, mod, ...extra] : [alice, bob];
  const outsiders = kind === "general" ? [] : [carol, mod, ...extra];
  return { insiders, outsiders };
}

// ---------------------------------------------------------------------------------------
// 1. PATCH /api/messages/:id

describe("PATCH /api/messages/:id: the author edits", () => {
  test("200 with exactly the full message: trimmed content, editedAt (ISO, ms, Z); the row agrees", async () => {
    const original = await postIn(alice, GENERAL, "first draft");
    expect(Object.keys(original).sort()).toEqual(neverEditedLiveKeys);
    const body = await edit(alice, original.id, "  \n second draft\t ");
    expectEdited(body, original, "second draft");
    const row = await messageRow(original.id);
    expect(row).toMatchObject({ id: original.id, channel_id: GENERAL, user_id: alice.user.id, content: "second draft", deleted_at: null });
    expect(row!.edited_at!.toISOString()).toBe(body.editedAt!);
    expect(row!.created_at.toISOString()).toBe(original.timestamp);
  });

  test("other fields in the body are ignored: channelId and userId neither move nor re-attribute the message", async () => {
    const elsewhere = await channelOf("public");
    const original = await postIn(alice, GENERAL, "stays in general");
    const body = await expectStatus(await editReq(alice, original.id, { content: "still in general", channelId: elsewhere, userId: bob.user.id, id: 1 }), 200);
    expectEdited(body, original, "still in general");
    expect(await messageRow(original.id)).toMatchObject({ channel_id: GENERAL, user_id: alice.user.id, content: "still in general" });
  });

  test("the limits are the send limits: 4000 code points (emoji) pass, and 4000 characters padded with spaces pass trimmed", async () => {
    const original = await postIn(alice, GENERAL, "short");
    const emoji = "😀".repeat(4000);
    expectEdited(await edit(alice, original.id, emoji), original, emoji);
    const padded = "  " + "ж".repeat(4000) + "  ";
    expectEdited(await edit(alice, original.id, padded), original, "ж".repeat(4000));
    expect((await messageRow(original.id))!.content).toBe("ж".repeat(4000));
  });

  test.each(kinds)(
    "in a %s channel: message:updated is exactly {id, channelId, content, editedAt} on every member's socket (both transports, the author's too); outsiders get nothing",
    async (kind) => {
      const channelId = await channelOf(kind);
      const original = await postIn(alice, channelId, "to be edited");
      const { insiders, outsiders } = audienceOf(kind);
      const inside = await recordTabs(insiders);
      const outside = await recordTabs(outsiders);
      const body = await edit(alice, original.id, " edited ");
      expectEdited(body, original, "edited");
      const update: Recorded[] = [["message:updated", { id: original.id, channelId, content: "edited", editedAt: body.editedAt, seq: expect.any(Number) }]];
      await expectOnlyMarker([...inside, ...outside], inside.map(() => update));
    },
  );

  test("message:updated is emitted only after the new text is committed", async () => {
    const channelId = await channelOf("public");
    const original = await postIn(alice, channelId, "locked");
    const [watcher] = await recordTabs([bob]);
    let pending!: Promise<Response>;
    await sql.begin(async (tx) => {
      await tx`SELECT id FROM messages WHERE id = ${original.id} FOR UPDATE`;
      pending = editReq(alice, original.id, { content: "unlocked" });
      await waitForLockWaiter();
      // The edit's write waits for the row: nothing may have been emitted yet.
      const marker = await postMarker();
      expect(await watcher!.until(isMessage(marker.id))).toEqual([["message", marker]]);
      expect((await messageRow(original.id))!.content).toBe("locked");
    });
    const body = await expectStatus(await pending, 200);
    expectEdited(body, original, "unlocked");
    const events = await watcher!.until(isEvent("message:updated", original.id));
    expect(events.at(-1)).toEqual(["message:updated", { id: original.id, channelId, content: "unlocked", editedAt: body.editedAt, seq: expect.any(Number) }]);
  });

  test("editing to the same text (after trim): 200 with the message unchanged (no editedAt if never edited), no row change, no broadcast", async () => {
    const original = await postIn(alice, GENERAL, "same text");
    const recorders = await recordTabs([alice, bob]);
    const before = await messageRow(original.id);
    const body = await expectStatus(await editReq(alice, original.id, { content: "  same text \n" }), 200);
    expect(body).toEqual(asHistory(original));
    expect(Object.keys(body).sort()).toEqual(neverEditedKeys);
    expect(await messageRow(original.id)).toEqual(before);
    expect(before!.edited_at).toBeNull();
    await expectOnlyMarker(recorders);
  });

  test("after a real edit, the same text again keeps editedAt as it was and broadcasts nothing; a further edit moves editedAt on", async () => {
    const original = await postIn(alice, GENERAL, "v1");
    const first = await edit(alice, original.id, "v2");
    const recorders = await recordTabs([alice, bob]);
    const before = await messageRow(original.id);
    expect(await edit(alice, original.id, " v2 ")).toEqual(first);
    expect(await messageRow(original.id)).toEqual(before);
    await expectOnlyMarker(recorders);

    const watchers = await recordTabs([bob]);
    const second = await edit(alice, original.id, "v3");
    expectEdited(second, original, "v3");
    expect(Date.parse(second.editedAt!)).toBeGreaterThanOrEqual(Date.parse(first.editedAt!));
    const update: Recorded[] = [["message:updated", { id: original.id, channelId: GENERAL, content: "v3", editedAt: second.editedAt, seq: expect.any(Number) }]];
    await expectOnlyMarker(watchers, [update, update]);
  });

  test("history shows the edit: GET /api/messages and GET /api/channels/:id/messages carry the new content and editedAt; never-edited entries and broadcasts have no editedAt key", async () => {
    const channelId = await channelOf("private");
    // A never-edited message as broadcast and as listed.
    const [watcher] = await recordTabs([bob]);
    const plain = await postIn(alice, GENERAL, "never edited");
    const [event, broadcast] = (await watcher!.until(isMessage(plain.id))).at(-1)!;
    expect(event).toBe("message");
    expect(broadcast).toEqual(plain);
    expect(Object.keys(broadcast as object).sort()).toEqual(neverEditedLiveKeys);
    const listed = (await generalHistory(bob, `?after=${plain.id - 1}&limit=1`))[0]!;
    expect(listed).toEqual(asHistory(plain));
    expect(Object.keys(listed).sort()).toEqual(neverEditedKeys);

    for (const where of [GENERAL, channelId]) {
      const original = await postIn(alice, where, "old words");
      const edited = await edit(alice, original.id, "new words");
      const around = `?after=${original.id - 1}&limit=1`;
      expect(await historyOf(bob, where, around)).toEqual([edited]);
      expect(await historyOf(bob, where, `?before=${original.id + 1}&limit=1`)).toEqual([edited]);
      expect((await historyOf(bob, where)).find((m) => m.id === original.id)).toEqual(edited);
      if (where === GENERAL) expect(await generalHistory(bob, around)).toEqual([edited]);
    }
  });

  test("a moderator edits their own message like any author: 200, broadcast, and no audit row", async () => {
    const original = await postIn(mod, GENERAL, "mod wrote this");
    const recorders = await recordTabs([bob]);
    const body = await edit(mod, original.id, "mod fixed this");
    expectEdited(body, original, "mod fixed this");
    const update: Recorded[] = [["message:updated", { id: original.id, channelId: GENERAL, content: "mod fixed this", editedAt: body.editedAt, seq: expect.any(Number) }]];
    await expectOnlyMarker(recorders, [update, update]);
    expect(await auditRowsFor(original.id)).toEqual([]);
  });
});

describe("PATCH /api/messages/:id: refusals change nothing and broadcast nothing", () => {
  test.each([
    ["a plain member", () => bob],
    ["a moderator", () => mod],
    ["an admin", () => admin],
  ])("someone else's message, edited by %s: 403 FORBIDDEN", async (_, who) => {
    const original = await postIn(alice, GENERAL, "alice's words");
    await expectRefusal(async () => {
      await expectError(await editReq(who(), original.id, { content: "not yours" }), 403, "FORBIDDEN");
    });
    expect(await messageRow(original.id)).toMatchObject({ content: "alice's words", edited_at: null });
  });

  test("someone else's message in a public channel the caller has not joined: 403 FORBIDDEN", async () => {
    const channelId = await channelOf("public");
    const original = await postIn(alice, channelId, "in public");
    await expectRefusal(async () => {
      await expectError(await editReq(carol, original.id, { content: "not yours" }), 403, "FORBIDDEN");
    });
  });

  test.each([
    ["an unknown id", async () => ({ id: MAX_INT4, who: alice })],
    ["an id past the newest", async () => ({ id: (await postIn(alice, GENERAL)).id + 1000, who: alice })],
    ["a private channel's message, for a user not in it", async () => ({ id: (await postIn(alice, await channelOf("private"))).id, who: carol })],
    ["a private channel's message, for a moderator not in it", async () => ({ id: (await postIn(alice, await channelOf("private"))).id, who: mod })],
    ["a private channel's message, for an admin not in it", async () => ({ id: (await postIn(alice, await channelOf("private"))).id, who: admin })],
    ["a direct channel's message, for a third user", async () => ({ id: (await postIn(alice, await channelOf("direct"))).id, who: carol })],
    [
      "a deleted message, for its author",
      async () => {
        const message = await postIn(alice, GENERAL);
        await remove(alice, message.id);
        return { id: message.id, who: alice };
      },
    ],
    [
      "a deleted message, for someone else",
      async () => {
        const message = await postIn(alice, GENERAL);
        await remove(alice, message.id);
        return { id: message.id, who: bob };
      },
    ],
  ])("%s: 404 NOT_FOUND", async (_, setup) => {
    const { id, who } = await setup();
    await expectRefusal(async () => {
      await expectError(await editReq(who, id, { content: "anything" }), 404, "NOT_FOUND");
    });
  });

  test.each(badIds)("path id %p: 400 VALIDATION_FAILED naming id", async (id) => {
    await expectRefusal(async () => {
      await expectError(await editReq(alice, id, { content: "anything" }), 400, "VALIDATION_FAILED", "id");
    });
  });

  test.each([
    ["{}", {}, "content"],
    ['content ""', { content: "" }, "content"],
    ["content of spaces", { content: "   " }, "content"],
    ["content of only whitespace and newlines", { content: " \n\t\r\n " }, "content"],
    ["content of 4001 characters", { content: "x".repeat(4001) }, "content"],
    ["content of 4001 code points (emoji)", { content: "😀".repeat(4001) }, "content"],
    ["content a number", { content: 42 }, "content"],
    ["content null", { content: null }, "content"],
    ["content true", { content: true }, "content"],
    ["content an object", { content: { text: "x" } }, "content"],
    ["content an array", { content: ["x"] }, "content"],
    ["content with a NUL character", { content: "a\u0000b" }, "content"],
    ["content with a lone high surrogate", { content: "a\uD800b" }, "content"],
    ["content with a lone low surrogate", { content: "\uDC00" }, "content"],
    ["an array body", [{ content: "x" }], undefined],
    ["a null body", null, undefined],
    ["a string body", "hello", undefined],
    ["a number body", 7, undefined],
    ["left out (no body, no content type)", undefined, "content"],
  ])("body %s: 400 VALIDATION_FAILED", async (_, body, path) => {
    const original = await postIn(alice, GENERAL, "stays as it is");
    await expectRefusal(async () => {
      await expectError(await editReq(alice, original.id, body), 400, "VALIDATION_FAILED", path);
    });
    expect(await messageRow(original.id)).toMatchObject({ content: "stays as it is", edited_at: null });
  });

  test.each([
    ["truncated JSON", '{"content":'],
    ["single-quoted keys", "{content: 'x'}"],
    ["trailing garbage", '{"content":"x"} x'],
    ["an empty body", ""],
  ])("invalid JSON (%s): 400 BAD_JSON", async (_, text) => {
    const original = await postIn(alice, GENERAL, "stays as it is");
    await expectRefusal(async () => {
      await expectError(await editReq(alice, original.id, new Raw(text)), 400, "BAD_JSON");
    });
  });

  test("a JSON body sent as text/plain: 400 BAD_JSON", async () => {
    const original = await postIn(alice, GENERAL, "stays as it is");
    await expectRefusal(async () => {
      const res = await fetch(`${t.url}/api/messages/${original.id}`, {
        method: "PATCH",
        headers: { authorization: `Bearer ${alice.token}`, "content-type": "text/plain" },
        body: JSON.stringify({ content: "x" }),
      });
      await expectError(res, 400, "BAD_JSON");
    });
  });

  test.each(badTokens)("%s: 401 UNAUTHORIZED (also with a bad id)", async (_, token) => {
    const original = await postIn(alice, GENERAL, "stays as it is");
    await expectRefusal(async () => {
      await expectError(await editReq(token, original.id, { content: "x" }), 401, "UNAUTHORIZED");
      await expectError(await editReq(token, "abc", { content: "x" }), 401, "UNAUTHORIZED");
    });
  });
});

// ---------------------------------------------------------------------------------------
// 2. DELETE /api/messages/:id

describe("DELETE /api/messages/:id", () => {
  test.each(kinds)(
    "the author, in a %s channel: 204 empty; the row keeps its id, content '' and deleted_at set; message:deleted exactly {id, channelId} to members only; no audit row",
    async (kind) => {
      const channelId = await channelOf(kind);
      const original = await postIn(alice, channelId, "soon gone");
      const before = (await messageRow(original.id))!;
      const { insiders, outsiders } = audienceOf(kind);
      const inside = await recordTabs(insiders);
      const outside = await recordTabs(outsiders);
      const started = Date.now();
      await remove(alice, original.id);
      const row = (await messageRow(original.id))!;
      expect(row).toEqual({ ...before, content: "", deleted_at: expect.any(Date) });
      expect(Math.abs(row.deleted_at!.getTime() - started)).toBeLessThan(60_000);
      const deleted: Recorded[] = [["message:deleted", { id: original.id, channelId, seq: expect.any(Number) }]];
      await expectOnlyMarker([...inside, ...outside], inside.map(() => deleted));
      expect(await auditRowsFor(original.id)).toEqual([]);
    },
  );

  test("an edited message, deleted: its content is erased and history shows only the tombstone", async () => {
    const original = await postIn(alice, GENERAL, "edited then deleted");
    await edit(alice, original.id, "edited text");
    await remove(alice, original.id);
    expect((await messageRow(original.id))!.content).toBe("");
    const entries = await generalHistory(bob, `?after=${original.id - 1}&limit=1`);
    expect(entries).toEqual([tombstone(original.id)]);
    expectTombstonesExact(entries);
  });

  test("message:deleted is emitted only after the deletion is committed (author: row locked; moderator: audit insert held)", async () => {
    const channelId = await channelOf("public");
    for (const actor of [alice, mod]) {
      const original = await postIn(alice, channelId, "held");
      const [watcher] = await recordTabs([bob]);
      let pending!: Promise<Response>;
      await sql.begin(async (tx) => {
        // The author's delete waits for the row; the moderator's waits, inside its transaction
        // and after erasing the row, for the audit insert.
        if (actor === alice) await tx`SELECT id FROM messages WHERE id = ${original.id} FOR UPDATE`;
        else await tx`LOCK TABLE audit_log IN SHARE MODE`;
        pending = deleteReq(actor, original.id);
        await waitForLockWaiter();
        const marker = await postMarker();
        expect(await watcher!.until(isMessage(marker.id))).toEqual([["message", marker]]);
        expect(await messageRow(original.id)).toMatchObject({ content: "held", deleted_at: null });
      });
      await expectStatus(await pending, 204);
      const events = await watcher!.until(isEvent("message:deleted", original.id));
      expect(events.at(-1)).toEqual(["message:deleted", { id: original.id, channelId, seq: expect.any(Number) }]);
      watcher!.stop();
      expect(await messageRow(original.id)).toMatchObject({ content: "", deleted_at: expect.any(Date) });
      expect(await auditRowsFor(original.id)).toHaveLength(actor === alice ? 0 : 1);
    }
  });

  test.each(["general", "private"] as const)(
    "history of a %s channel shows exactly { id, deleted: true } in place, with and without before/after cursors, in both history routes",
    async (kind) => {
      const channelId = await channelOf(kind);
      const m: ChatMessage[] = [];
      for (let i = 1; i <= 5; i++) m.push(asHistory(await postIn(alice, channelId, `history ${i}`)));
      const [m1, m2, m3, m4, m5] = m as [ChatMessage, ChatMessage, ChatMessage, ChatMessage, ChatMessage];
      await remove(alice, m2.id);
      await remove(mod, m4.id);
      const t2 = tombstone(m2.id);
      const t4 = tombstone(m4.id);
      const cases: [string, HistoryEntry[]][] = [
        ["?limit=5", [m5, t4, m3, t2, m1]],
        [`?before=${m5.id}&limit=3`, [t4, m3, t2]],
        [`?before=${m4.id}&limit=3`, [m3, t2, m1]],
        [`?after=${m1.id}&limit=3`, [t2, m3, t4]],
        [`?after=${m2.id}&limit=3`, [m3, t4, m5]],
        [`?after=${m3.id}`, [t4, m5]],
      ];
      for (const [query, expected] of cases) {
        for (const reader of [alice, bob]) {
          const entries = await historyOf(reader, channelId, query);
          expect({ query, entries }).toEqual({ query, entries: expected });
          expectTombstonesExact(entries);
          if (kind === "general") expect({ query, entries: await generalHistory(reader, query) }).toEqual({ query, entries: expected });
        }
      }
    },
  );

  test("search no longer finds a deleted message's words", async () => {
    const word = `zebrafish${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
    const original = await postIn(alice, GENERAL, `look for ${word} here`);
    const search = async () => expectStatus(await api("GET", `/api/messages/search?q=${word}`, bob.token), 200);
    expect((await search()).map((hit: { message: ChatMessage }) => hit.message.id)).toEqual([original.id]);
    await remove(alice, original.id);
    expect(await search()).toEqual([]);
  });

  test("unread counts in GET /api/channels stop counting deleted messages", async () => {
    const channelId = await channelOf("public");
    const sent = [await postIn(alice, channelId), await postIn(alice, channelId), await postIn(alice, channelId)];
    expect(await unreadIn(bob, channelId)).toBe(3);
    await remove(alice, sent[1]!.id);
    expect(await unreadIn(bob, channelId)).toBe(2);
    await remove(mod, sent[2]!.id);
    expect(await unreadIn(bob, channelId)).toBe(1);
    await remove(alice, sent[0]!.id);
    expect(await unreadIn(bob, channelId)).toBe(0);
    expect(await unreadIn(alice, channelId)).toBe(0);
  });

  test("deleting an already deleted message: 204 again, deleted_at kept, no second broadcast, no second audit row", async () => {
    const byAuthor = await postIn(alice, GENERAL, "deleted twice by alice");
    const byMod = await postIn(alice, GENERAL, "deleted twice by the moderator");
    const recorders = await recordTabs([alice, bob]);
    await remove(alice, byAuthor.id);
    await remove(mod, byMod.id);
    const rows = [await messageRow(byAuthor.id), await messageRow(byMod.id)];
    const before = await snapshot();
    await remove(alice, byAuthor.id);
    await remove(mod, byMod.id);
    await remove(mod, byAuthor.id); // a moderator on what the author already deleted: no audit row either
    await remove(alice, byMod.id); // the author on what a moderator already deleted
    await remove(admin, byMod.id);
    expect(await snapshot()).toEqual(before);
    expect([await messageRow(byAuthor.id), await messageRow(byMod.id)]).toEqual(rows);
    const once: Recorded[] = [
      ["message:deleted", { id: byAuthor.id, channelId: GENERAL, seq: expect.any(Number) }],
      ["message:deleted", { id: byMod.id, channelId: GENERAL, seq: expect.any(Number) }],
    ];
    await expectOnlyMarker(recorders, recorders.map(() => once));
    expect(await auditRowsFor(byAuthor.id)).toEqual([]);
    expect(await auditRowsFor(byMod.id)).toHaveLength(1);
  });

  test("a moderator and an admin deleting the same message at once: both 204, one message:deleted, one audit row", async () => {
    const channelId = await channelOf("public");
    const original = await postIn(alice, channelId, "contested");
    const recorders = await recordTabs([alice, bob]);
    let first!: Promise<Response>;
    let second!: Promise<Response>;
    await sql.begin(async (tx) => {
      await tx`SELECT id FROM messages WHERE id = ${original.id} FOR UPDATE`;
      first = deleteReq(mod, original.id);
      await waitForLockWaiter();
      // The second reads the row while the first is held, so it too sees it undeleted and
      // queues behind the first. (The pause only lets the request get that far: if it got
      // less far, it would see the deletion and stop all the same.)
      second = deleteReq(admin, original.id);
      await Bun.sleep(150);
    });
    await expectStatus(await first, 204);
    await expectStatus(await second, 204);
    expect(await messageRow(original.id)).toMatchObject({ content: "", deleted_at: expect.any(Date) });
    expect(await auditRowsFor(original.id)).toEqual([
      {
        actor_id: mod.user.id,
        action: "message_delete",
        target_type: "message",
        target_id: String(original.id),
        ip: peer,
        meta: { channelId, authorId: alice.user.id },
      },
    ]);
    const deleted: Recorded[] = [["message:deleted", { id: original.id, channelId, seq: expect.any(Number) }]];
    await expectOnlyMarker(recorders, recorders.map(() => deleted));
  });

  describe("refused: nothing changes, nothing is broadcast", () => {
    test.each([
      ["a plain member, someone else's message in general: 403 FORBIDDEN", "general", () => bob, 403, "FORBIDDEN"],
      ["a plain member, someone else's message in a shared public channel: 403 FORBIDDEN", "public", () => bob, 403, "FORBIDDEN"],
      ["a plain member, someone else's message in a shared private channel: 403 FORBIDDEN", "private", () => bob, 403, "FORBIDDEN"],
      ["the other party of a direct channel: 403 FORBIDDEN", "direct", () => bob, 403, "FORBIDDEN"],
      ["a plain user, a public channel they have not joined: 403 FORBIDDEN", "public", () => carol, 403, "FORBIDDEN"],
      ["a plain user, a private channel they are not in: 404 NOT_FOUND", "private", () => carol, 404, "NOT_FOUND"],
      ["a plain user, a direct channel they are not in: 404 NOT_FOUND", "direct", () => carol, 404, "NOT_FOUND"],
    ] as const)("%s", async (_, kind, who, status, code) => {
      const channelId = await channelOf(kind);
      const original = await postIn(alice, channelId, "keep me");
      const recorders = await recordTabs([alice, bob]);
      const before = await snapshot();
      await expectError(await deleteReq(who(), original.id), status, code);
      expect(await snapshot()).toEqual(before);
      expect(await messageRow(original.id)).toMatchObject({ content: "keep me", deleted_at: null });
      await expectOnlyMarker(recorders);
    });

    test.each([
      ["a plain user", () => alice],
      ["a moderator", () => mod],
    ])("an unknown id, for %s: 404 NOT_FOUND", async (_, who) => {
      const recorders = await recordTabs([alice, bob]);
      const before = await snapshot();
      await expectError(await deleteReq(who(), MAX_INT4), 404, "NOT_FOUND");
      expect(await snapshot()).toEqual(before);
      await expectOnlyMarker(recorders);
    });

    test.each(badTokens)("%s: 401 UNAUTHORIZED (also with a bad id)", async (_, token) => {
      const original = await postIn(alice, GENERAL, "stays as it is");
      await expectRefusal(async () => {
        await expectError(await deleteReq(token, original.id), 401, "UNAUTHORIZED");
        await expectError(await deleteReq(token, "abc"), 401, "UNAUTHORIZED");
      });
      expect(await messageRow(original.id)).toMatchObject({ content: "stays as it is", deleted_at: null });
    });

    test.each(badIds)("path id %p: 400 VALIDATION_FAILED naming id", async (id) => {
      await expectRefusal(async () => {
        await expectError(await deleteReq(mod, id), 400, "VALIDATION_FAILED", "id");
      });
    });
  });

  test.each(
    (["a moderator", "an admin"] as const).flatMap((role) => kinds.map((kind) => [role, kind] as const)),
  )("%s deletes another user's message in a %s channel (member or not): 204, broadcast to members only, one audit row", async (role, kind) => {
    const actor = role === "a moderator" ? mod : admin;
    const channelId = await channelOf(kind);
    const original = await postIn(alice, channelId, "moderated");
    const extra = role === "an admin" ? [admin] : [];
    const { insiders, outsiders } = audienceOf(kind, extra);
    const inside = await recordTabs(insiders);
    const outside = await recordTabs(outsiders);
    await remove(actor, original.id);
    expect(await messageRow(original.id)).toMatchObject({ id: original.id, content: "", deleted_at: expect.any(Date) });
    const deleted: Recorded[] = [["message:deleted", { id: original.id, channelId, seq: expect.any(Number) }]];
    await expectOnlyMarker([...inside, ...outside], inside.map(() => deleted));

    const expected = {
      actor_id: actor.user.id,
      action: "message_delete",
      target_type: "message",
      target_id: String(original.id),
      ip: peer,
      meta: { channelId, authorId: alice.user.id },
    };
    expect(await auditRowsFor(original.id)).toEqual([expected]);
    // The same entry through the admin API.
    const entries: Json[] = await expectStatus(await api("GET", `/api/admin/audit?action=message_delete&actorId=${actor.user.id}&limit=1`, admin.token), 200);
    expect(entries).toEqual([
      {
        id: expect.any(Number),
        at: expect.stringMatching(isoTime),
        actorId: actor.user.id,
        action: "message_delete",
        targetType: "message",
        targetId: String(original.id),
        ip: peer,
        meta: { channelId, authorId: alice.user.id },
      },
    ]);
  });

  test("a moderator (or admin) deleting their own message writes no audit row", async () => {
    for (const author of [mod, admin]) {
      const original = await postIn(author, GENERAL, "my own");
      const recorders = await recordTabs([bob]);
      await remove(author, original.id);
      const deleted: Recorded[] = [["message:deleted", { id: original.id, channelId: GENERAL, seq: expect.any(Number) }]];
      await expectOnlyMarker(recorders, [deleted, deleted]);
      expect(await auditRowsFor(original.id)).toEqual([]);
      expect(await messageRow(original.id)).toMatchObject({ content: "", deleted_at: expect.any(Date) });
    }
  });

  test.each(["polling", "websocket", "rest"] as const)(
    "resending (over %s) the clientId of a deleted message returns { id, deleted: true } for the same id: no new row, no broadcast",
    async (via) => {
      const clientId = crypto.randomUUID();
      const original = await postIn(alice, GENERAL, "sent once", clientId);
      await remove(alice, original.id);
      const sender = via === "rest" ? undefined : await connect(alice, via);
      const recorders = [...(sender ? [record(sender)] : []), ...(await recordTabs([alice, bob]))];
      const before = await snapshot();
      if (sender) {
        const ack = (await sendWithAck(sender, { content: "sent again", clientId })) as Ack;
        expect(ack).toEqual({ ok: true, message: tombstone(original.id) });
        expect(Object.keys((ack as Extract<Ack, { ok: true }>).message).sort()).toEqual(["deleted", "id"]);
      } else {
        const body = await expectStatus(await api("POST", "/api/messages", alice.token, { content: "sent again", clientId }), 201);
        expect(body).toEqual(tombstone(original.id));
        expect(Object.keys(body).sort()).toEqual(["deleted", "id"]);
      }
      expect(await snapshot()).toEqual(before);
      const rows = await sql`SELECT id, content FROM messages WHERE user_id = ${alice.user.id} AND client_id = ${clientId}`;
      expect([...rows]).toEqual([{ id: original.id, content: "" }]);
      await expectOnlyMarker(recorders);
    },
  );

  test("an edit after a delete: 404 NOT_FOUND, the content stays erased, nothing is broadcast", async () => {
    const original = await postIn(alice, GENERAL, "gone for good");
    await edit(alice, original.id, "edited once");
    await remove(alice, original.id);
    const before = await messageRow(original.id);
    const recorders = await recordTabs([alice, bob]);
    await expectError(await editReq(alice, original.id, { content: "back to life?" }), 404, "NOT_FOUND");
    expect(await messageRow(original.id)).toEqual(before);
    expect(before).toMatchObject({ content: "", deleted_at: expect.any(Date) });
    await expectOnlyMarker(recorders);
  });

  test("an edit racing a delete never brings the text back: the delete wins, the edit is 404, the row stays erased", async () => {
    const channelId = await channelOf("public");
    const original = await postIn(alice, channelId, "racing");
    const [watcher] = await recordTabs([bob]);
    let deleting!: Promise<Response>;
    let editing!: Promise<Response>;
    await sql.begin(async (tx) => {
      await tx`SELECT id FROM messages WHERE id = ${original.id} FOR UPDATE`;
      deleting = deleteReq(alice, original.id);
      await waitForLockWaiter();
      // The edit reads the row while the delete is held, so it sees it undeleted and queues
      // behind the delete. (The pause only lets the request get that far: if it got less far,
      // it would see the deletion and be refused all the same.)
      editing = editReq(alice, original.id, { content: "resurrected" });
      await Bun.sleep(150);
    });
    await expectStatus(await deleting, 204);
    await expectError(await editing, 404, "NOT_FOUND");
    expect(await messageRow(original.id)).toMatchObject({ content: "", edited_at: null, deleted_at: expect.any(Date) });
    await expectOnlyMarker([watcher!], [[["message:deleted", { id: original.id, channelId, seq: expect.any(Number) }]]]);
  });
});
