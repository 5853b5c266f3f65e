import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { asHistory } from "./helpers/recorder.ts";
import { startTestServer, uniqueName, type Json, type Registered } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { apiFor, expectStatus, messagePoster } from "./helpers/http.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §8, the Search bullet: GET /api/messages/search?q=&channelId=&limit=&before= →
// [ { message, highlight } ], best match first (then newest), over the caller's channels only,
// Russian and English word forms, the last word as a prefix, `q` as plain text that can never
// make the query fail; §0's error shape for every refusal.
//
// Isolation: every test posts into channels of its own (mostly private rooms) and searches with
// `channelId`, or uses made-up words (consonants only, which no stemmer touches), so the exact
// id lists below cannot see other tests' messages.

const t = await startTestServer();

const GENERAL = 1;
const MAX_INT4 = 2_147_483_647;
const isoTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

type Channel = { id: number; name: string; kind: "public" | "private" | "direct"; createdAt: string; unread: number };
type Hit = { message: ChatMessage; highlight: string };
type Params = Record<string, string | number>;

// ---------------------------------------------------------------------------------------
// Helpers

const api = apiFor(t);

async function createChannel(owner: Registered, kind: "public" | "private"): Promise<Channel> {
  return expectStatus(await api("POST", "/api/channels", owner.token, { name: uniqueName(kind), kind }), 201);
}

/** A private channel of `owner`'s own: nobody else's messages can show up in it. */
const room = (owner: Registered) => createChannel(owner, "private").then((c) => c.id);

async function join(user: Registered, channelId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/join`, user.token), 200);
}

async function leave(user: Registered, channelId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/leave`, user.token), 204);
}

async function addMember(actor: Registered, channelId: number, userId: number): Promise<void> {
  await expectStatus(await api("POST", `/api/channels/${channelId}/members`, actor.token, { userId }), 200);
}

async function direct(user: Registered, other: Registered): Promise<number> {
  const res = await api("POST", `/api/direct/${other.user.id}`, user.token);
  const channel: Channel = await expectStatus(res, res.status === 200 ? 200 : 201);
  return channel.id;
}

/** POST /api/messages; returns the message as the server answered it. */
const postIn = messagePoster(t);

/** Posts each text in order (so ids increase in array order). */
async function postAll(user: Registered, channelId: number, contents: string[]): Promise<ChatMessage[]> {
  const posted: ChatMessage[] = [];
  for (const content of contents) posted.push(await postIn(user, channelId, content));
  return posted;
}

/** The raw search request; `query` is used as written (already percent-encoded). */
const searchRaw = (token: string | undefined, query: string) => api("GET", `/api/messages/search${query === "" ? "" : `?${query}`}`, token);

const encode = (params: Params) =>
  Object.entries(params)
    .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
    .join("&");

/** A successful search: 200, an array, every hit of the exact shape. */
async function search(user: Registered, params: Params): Promise<Hit[]> {
  const hits = await expectStatus(await searchRaw(user.token, encode(params)), 200);
  expect(Array.isArray(hits)).toBe(true);
  for (const hit of hits) expectHitShape(hit);
  return hits;
}

const hitIds = (hits: Hit[]) => hits.map((h) => h.message.id);
const ids = (messages: ChatMessage[]) => messages.map((m) => m.id);
/** The ids a search finds. */
const found = async (user: Registered, params: Params) => hitIds(await search(user, params));

/** The texts wrapped in <mark>…</mark>, in order. */
const marked = (highlight: string) => [...highlight.matchAll(/<mark>(.*?)<\/mark>/g)].map((m) => m[1]);

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");

/**
 * `highlight` is an excerpt of `content` (one or more pieces of it, joined by " … "), HTML-escaped,
 * with exactly `marks` wrapped in <mark>. Which words around the matches the excerpt keeps is
 * ts_headline's choice and is not pinned down here.
 */
function expectExcerpt(highlight: string, content: string, marks: string[]) {
  expect(marked(highlight)).toEqual(marks);
  const bare = highlight.replaceAll("<mark>", "").replaceAll("</mark>", "");
  for (const piece of bare.split(" … ")) {
    expect(piece.trim().length).toBeGreaterThan(0);
    expect(escapeHtml(content)).toContain(piece);
  }
}

/**
 * `{ message, highlight }` exactly; `message` is api.md's message shape (plus `editedAt` once
 * edited); `highlight` is safe HTML: apart from balanced <mark>…</mark>, no `<`, `>` or `"`, and
 * every `&` starts one of the entities the escaper writes; no private-use marker survives.
 */
function expectHitShape(hit: unknown) {
  expect(Object.keys(hit as object).sort()).toEqual(["highlight", "message"]);
  const { message, highlight } = hit as Hit;
  const keys = Object.keys(message).sort();
  expect(keys).toEqual(
    "editedAt" in message
      ? ["channelId", "content", "editedAt", "id", "timestamp", "userId", "username"]
      : ["channelId", "content", "id", "timestamp", "userId", "username"],
  );
  expect(message).toEqual({
    id: expect.any(Number),
    channelId: expect.any(Number),
    userId: expect.any(Number),
    username: expect.any(String),
    content: expect.any(String),
    timestamp: expect.stringMatching(isoTime),
    ...("editedAt" in message ? { editedAt: expect.stringMatching(isoTime) } : {}),
  });
  for (const n of [message.id, message.channelId, message.userId]) expect(Number.isInteger(n)).toBe(true);
  expect(typeof highlight).toBe("string");
  expect(highlight).not.toMatch(/[\uE000\uE001]/);
  const opens = highlight.split("<mark>").length - 1;
  expect(highlight.split("</mark>").length - 1).toBe(opens);
  const bare = highlight.replaceAll("<mark>", "").replaceAll("</mark>", "");
  expect(bare).not.toMatch(/[<>"]/);
  expect(bare.replace(/&(amp|lt|gt|quot|#39);/g, "")).not.toContain("&");
}

/** A made-up word no stemmer changes (consonants only) and no other test uses. */
function word(): string {
  const consonants = "bcdfghjklmnpqrstvwxz";
  let w = "zq";
  for (let i = 0; i < 10; i++) w += consonants[Math.floor(Math.random() * consonants.length)];
  return w;
}

// Three users for the whole file: registering (argon2id) is the slow part.
let alice: Registered;
let bob: Registered;
let carol: Registered;
beforeAll(async () => {
  [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
});

// ---------------------------------------------------------------------------------------
// 1. The response

describe("response", () => {
  test("each hit is exactly { message, highlight }, with the message exactly as POST /api/messages returned it, less its event seq", async () => {
    const channelId = await room(alice);
    const [fox] = await postAll(alice, channelId, ["The quick brown fox", "a lazy dog sleeps"]);
    const hits = await search(alice, { q: "fox", channelId });
    // As history shows it: POST's answer without its seq (api.md §11).
    expect(hits).toEqual([{ message: asHistory(fox!), highlight: expect.any(String) }]);
    expectExcerpt(hits[0]!.highlight, fox!.content, ["fox"]);
    // Without channelId, over all of the caller's channels: the same single hit.
    const everywhere = await search(alice, { q: "quick brown fox" });
    expect(everywhere).toEqual([{ message: asHistory(fox!), highlight: expect.any(String) }]);
    expectExcerpt(everywhere[0]!.highlight, fox!.content, ["quick", "brown", "fox"]);
  });

  test("nothing matching → 200 []", async () => {
    const channelId = await room(alice);
    await postIn(alice, channelId, "something else entirely");
    expect(await search(alice, { q: word() })).toEqual([]);
    expect(await search(alice, { q: "entirely", channelId: await room(alice) })).toEqual([]);
  });

  test.each([
    ["no Authorization header", undefined],
    ["a malformed token", "not-a-jwt"],
    ["an empty token", ""],
  ])("%s → 401 UNAUTHORIZED", async (_label, token) => {
    await expectError(await searchRaw(token, "q=hello"), 401, "UNAUTHORIZED");
  });
});

// ---------------------------------------------------------------------------------------
// 2. Word forms, prefixes, AND

describe("words", () => {
  // Each row: its own room with the message and a decoy that matches none of the queries.
  const decoy = "погода сегодня хорошая, quiet day";

  test.each([
    ["Russian plural finds the singular", "Это сообщение важное", "сообщения"],
    ["Russian singular finds the plural", "Пришли новые сообщения", "сообщение"],
    ["Russian instrumental finds the nominative", "Поделитесь сообщениями", "сообщение"],
    ["Russian: another case of another word", "Мы говорили о книгах", "книга"],
    ["English plural finds the singular", "one message arrived", "messages"],
    ["English singular finds the plural", "two messages arrived", "message"],
    ["running finds runs", "she runs every day", "running"],
    ["running finds run", "we run at dawn", "running"],
    ["runs finds running", "I like running", "runs"],
    ["the last word is a prefix (English)", "hello world", "hel"],
    ["the last word is a prefix (Russian)", "сообщение отправлено", "сообщ"],
    ["a prefix longer than the stem (runn → running)", "I like running", "runn"],
    ["a whole word and a prefix", "hello world", "hello wor"],
    ["word order does not matter", "hello world", "world hello"],
    ["case does not matter (English)", "HELLO World", "hello WORLD"],
    ["case does not matter (Russian)", "Привет МИР", "привет мир"],
    ["mixed languages, word forms of both", "Новое сообщение about deployments", "deployment сообщения"],
    ["mixed languages, Russian word form and English prefix", "Новое сообщение about deployments", "сообщения deplo"],
    ["mixed languages, English word form and Russian prefix", "Новое сообщение about deployments", "deployment сооб"],
    ["punctuation in q only separates words", "hello, world!", "...hello?! (world)"],
    ["q is NFC-normalised (decomposed é finds precomposed é)", "un café noir", "cafe\u0301"],
  ])("%s: %p finds it with q=%p", async (_label, content, q) => {
    const channelId = await room(alice);
    const [message] = await postAll(alice, channelId, [content, decoy]);
    expect(await found(alice, { q, channelId })).toEqual([message!.id]);
  });

  test.each([
    ["every word must match (AND)", "hello world", "hello planet"],
    ["every word must match, in Russian too", "привет мир", "привет друг"],
    // Only the LAST word is a prefix: earlier words match whole words (as stems) only.
    ["an earlier word is not a prefix", "hello world", "hel world"],
    ["an earlier word is not a prefix (Russian)", "сообщение отправлено", "сообщ отправлено"],
    ["two prefixes do not match", "hello world", "hel wor"],
    ["a word longer than any in the message", "hello world", "worldwide"],
  ])("%s: %p is not found with q=%p", async (_label, content, q) => {
    const channelId = await room(alice);
    await postAll(alice, channelId, [content, decoy]);
    expect(await found(alice, { q, channelId })).toEqual([]);
  });

  // The `simple` half of the prefix match: a stopword has no stem, yet starts longer words.
  test.each([
    ["an English stopword", ["stack overflow again", "stack only"], "stack over"],
    ["a Russian stopword", ["погода хорошая", "ясно"], "по"],
  ])("the last word may be %s that starts a longer word", async (_label, contents, q) => {
    const channelId = await room(alice);
    const [message] = await postAll(alice, channelId, contents);
    expect(await found(alice, { q, channelId })).toEqual([message!.id]);
  });

  test("numbers are words: 2024 finds a message with 2024", async () => {
    const channelId = await room(alice);
    const [year] = await postAll(alice, channelId, ["released in 2024 at last", decoy]);
    expect(await found(alice, { q: "2024", channelId })).toEqual([year!.id]);
  });

  test("a decimal number finds itself: q=3.14 finds 'pi is 3.14'", async () => {
    const channelId = await room(alice);
    const [pi] = await postAll(alice, channelId, ["pi is 3.14 roughly", decoy]);
    expect(await found(alice, { q: "3.14", channelId })).toEqual([pi!.id]);
  });
});

// ---------------------------------------------------------------------------------------
// 3. Ranking

describe("ranking", () => {
  test("more occurrences rank higher; equal ranks newest (higher id) first", async () => {
    const channelId = await room(alice);
    // ts_rank_cd of 'kiwi': 3× → 0.6, 2× → 0.4, a single mention → 0.2 however far it is.
    const [once, thrice, twice, distant, onceAgain] = await postAll(alice, channelId, [
      "kiwi",
      "kiwi kiwi kiwi",
      "kiwi kiwi",
      "lots of words here before the fruit finally kiwi",
      "kiwi",
    ]);
    const hits = await search(alice, { q: "kiwi", channelId });
    expect(hitIds(hits)).toEqual(ids([thrice!, twice!, onceAgain!, distant!, once!]));
    expectExcerpt(hits[0]!.highlight, "kiwi kiwi kiwi", ["kiwi", "kiwi", "kiwi"]);
  });

  test("words close together rank above the same words far apart, whatever the ids", async () => {
    const channelId = await room(alice);
    // Posted best first, so "newest first" alone would give the reverse order.
    const posted = await postAll(alice, channelId, [
      "alpha beta and some more words here",
      "alpha x beta",
      "alpha one two three four five six seven eight nine ten eleven twelve beta",
    ]);
    expect(await found(alice, { q: "alpha beta", channelId })).toEqual(ids(posted));
  });

  test("the order is exactly ts_rank_cd's over the indexed expression, ties newest first", async () => {
    const channelId = await room(alice);
    await postAll(alice, channelId, [
      "сообщение",
      "сообщения сообщение сообщений",
      "это длинное сообщение, в котором много других слов",
      "сообщения",
      "сообщение и ещё одно сообщение",
    ]);
    const got = await found(alice, { q: "сообщения", channelId });
    const rows = await t.database.sql`
      SELECT id FROM messages m
      WHERE channel_id = ${channelId}
      ORDER BY ts_rank_cd(to_tsvector('russian'::regconfig, m.content) || to_tsvector('simple'::regconfig, m.content),
                          to_tsquery('russian'::regconfig, 'сообщения:*') || to_tsquery('simple'::regconfig, 'сообщения:*')) DESC, id DESC`;
    expect(got).toEqual(rows.map((r: { id: number }) => r.id));
    expect(got.length).toBe(5);
  });
});

// ---------------------------------------------------------------------------------------
// 4. Highlight

describe("highlight", () => {
  test("the excerpt is HTML-escaped (& < > \" ') with the match in <mark>", async () => {
    const channelId = await room(alice);
    const content = `Tom & Jerry say "hello" when 1 < 2 & 3 > 0, it's fine`;
    const message = await postIn(alice, channelId, content);
    const hits = await search(alice, { q: "hello", channelId });
    expect(hits).toEqual([{ message: asHistory(message), highlight: expect.any(String) }]);
    const { highlight } = hits[0]!;
    expectExcerpt(highlight, content, ["hello"]);
    for (const escaped of ["&quot;<mark>hello</mark>&quot;", " &lt; ", " &amp; ", " &gt; ", "it&#39;s"]) expect(highlight).toContain(escaped);
  });

  test("markup in a message is shown as text, escaped: <script> becomes &lt;script&gt;", async () => {
    const channelId = await room(alice);
    const message = await postIn(alice, channelId, `<script>alert(1)</script> hello & "bye"`);
    const [hit, ...rest] = await search(alice, { q: "hello", channelId });
    expect(rest).toEqual([]);
    expect(hit!.message).toEqual(asHistory(message));
    expect(hit!.highlight).not.toContain("<script");
    expect(hit!.highlight).toContain("<mark>hello</mark>");
    expect(hit!.highlight).toContain("&lt;script&gt;");
    expect(hit!.highlight).toContain("&amp;");
    expect(hit!.highlight).toContain("&quot;");
  });

  test("U+E000/U+E001 in a message never become <mark> tags (and stay in its content)", async () => {
    const channelId = await room(alice);
    const content = "hello \uE000world\uE001 and \uE001bye\uE000";
    const message = await postIn(alice, channelId, content);
    const plain = content.replace(/[\uE000\uE001]/g, "");
    const [hit, ...rest] = await search(alice, { q: "hello", channelId });
    expect(rest).toEqual([]);
    expect(hit!.message).toEqual(asHistory(message));
    expect(hit!.message.content).toBe(content);
    expectExcerpt(hit!.highlight, plain, ["hello"]);
    const [byWorld] = await search(alice, { q: "world", channelId });
    expectExcerpt(byWorld!.highlight, plain, ["world"]);
  });

  test.each([
    ["a Russian word form", "Это сообщение важное", "сообщения", ["сообщение"]],
    ["an English word form", "one message arrived", "messages", ["message"]],
    ["a prefix", "hello world", "hel", ["hello"]],
    ["every word of q, both languages", "Новое сообщение about deployments", "deployment сообщения", ["сообщение", "deployments"]],
    ["every occurrence", "hello world, hello again", "hello", ["hello", "hello"]],
    ["a prefix longer than the stem (runn → running)", "I like running every morning", "runn", ["running"]],
  ])("marks %s", async (_label, content, q, marks) => {
    const channelId = await room(alice);
    await postIn(alice, channelId, content);
    const hits = await search(alice, { q, channelId });
    expect(hits.length).toBe(1);
    expectExcerpt(hits[0]!.highlight, content, marks);
  });
});

// ---------------------------------------------------------------------------------------
// 5. Only the caller's channels

describe("membership", () => {
  const w = word();
  let inGeneral: ChatMessage;
  let inPrivate: ChatMessage;
  let inDirect: ChatMessage;
  let inPublic: ChatMessage;
  let privateId: number;
  let directId: number;
  let publicId: number;
  beforeAll(async () => {
    privateId = (await createChannel(bob, "private")).id;
    publicId = (await createChannel(bob, "public")).id;
    directId = await direct(bob, carol);
    inGeneral = await postIn(bob, GENERAL, `general ${w}`);
    inPrivate = await postIn(bob, privateId, `private ${w}`);
    inDirect = await postIn(bob, directId, `direct ${w}`);
    inPublic = await postIn(bob, publicId, `public ${w}`);
  });

  test("a private channel, a direct channel of two others and an unjoined public channel are never searched", async () => {
    expect(await found(alice, { q: w })).toEqual([inGeneral.id]);
    expect(await found(alice, { q: `private ${w}` })).toEqual([]);
    expect(await found(alice, { q: `direct ${w}` })).toEqual([]);
    expect(await found(alice, { q: `public ${w}` })).toEqual([]);
    // Their members do find them: the words are there.
    expect(await found(bob, { q: w })).toEqual(ids([inPublic, inDirect, inPrivate, inGeneral]));
    expect(await found(carol, { q: w })).toEqual(ids([inDirect, inGeneral]));
  });

  test("joining a public channel makes its messages searchable; leaving hides them again", async () => {
    await join(alice, publicId);
    expect(await found(alice, { q: w })).toEqual(ids([inPublic, inGeneral]));
    expect(await found(alice, { q: w, channelId: publicId })).toEqual([inPublic.id]);
    await leave(alice, publicId);
    expect(await found(alice, { q: w })).toEqual([inGeneral.id]);
    await expectError(await searchRaw(alice.token, encode({ q: w, channelId: publicId })), 403, "FORBIDDEN");
  });

  test("being added to a private channel makes its messages searchable", async () => {
    const x = word();
    const channelId = (await createChannel(bob, "private")).id;
    const secret = await postIn(bob, channelId, `secret ${x}`);
    expect(await found(alice, { q: x })).toEqual([]);
    await addMember(bob, channelId, alice.user.id);
    expect(await found(alice, { q: x })).toEqual([secret.id]);
  });

  test.each([
    ["a private channel the caller is not in", 404, "NOT_FOUND", (): number => privateId],
    ["a direct channel of two other users", 404, "NOT_FOUND", (): number => directId],
    ["an unknown channel", 404, "NOT_FOUND", (): number => 999_999],
    ["the largest id", 404, "NOT_FOUND", (): number => MAX_INT4],
    ["a public channel the caller has not joined", 403, "FORBIDDEN", (): number => publicId],
  ] as const)("channelId of %s → %i %s, whatever q", async (_label, status, code, channelId) => {
    for (const q of [w, "!!!"]) await expectError(await searchRaw(alice.token, encode({ q, channelId: channelId() })), status, code);
  });
});

// ---------------------------------------------------------------------------------------
// 6. channelId, before, limit

describe("filters", () => {
  test("channelId restricts the search to that channel", async () => {
    const x = word();
    const channelId = await room(alice);
    const inGeneral = await postIn(alice, GENERAL, `general ${x}`);
    const inRoom = await postIn(alice, channelId, `room ${x}`);
    expect(await found(alice, { q: x })).toEqual([inRoom.id, inGeneral.id]);
    expect(await found(alice, { q: x, channelId })).toEqual([inRoom.id]);
    expect(await found(alice, { q: x, channelId: GENERAL })).toEqual([inGeneral.id]);
  });

  test("before=<id> keeps only messages with a smaller id", async () => {
    const channelId = await room(alice);
    const posted = ids(await postAll(alice, channelId, ["note one", "note two", "note three", "note four", "note five"]));
    const newestFirst = [...posted].reverse();
    expect(await found(alice, { q: "note", channelId })).toEqual(newestFirst);
    expect(await found(alice, { q: "note", channelId, before: posted[3]! })).toEqual(newestFirst.slice(2));
    expect(await found(alice, { q: "note", channelId, before: posted[0]! })).toEqual([]);
    expect(await found(alice, { q: "note", channelId, before: MAX_INT4 })).toEqual(newestFirst);
    // before cuts by id, not by rank: a better match newer than the cursor is left out.
    const best = await postIn(alice, channelId, "note note note");
    expect((await found(alice, { q: "note", channelId }))[0]).toBe(best.id);
    expect(await found(alice, { q: "note", channelId, before: best.id })).toEqual(newestFirst);
  });

  test("limit: default 20, 1–100, combined with before to page", async () => {
    const channelId = await room(alice);
    const posted = ids(await postAll(alice, channelId, Array.from({ length: 25 }, (_, i) => `page ${i}`)));
    const newestFirst = [...posted].reverse();
    expect(await found(alice, { q: "page", channelId })).toEqual(newestFirst.slice(0, 20));
    expect(await found(alice, { q: "page", channelId, limit: 1 })).toEqual(newestFirst.slice(0, 1));
    expect(await found(alice, { q: "page", channelId, limit: 100 })).toEqual(newestFirst);
    expect(await found(alice, { q: "page", channelId, limit: 5, before: newestFirst[4]! })).toEqual(newestFirst.slice(5, 10));
  });
});

// ---------------------------------------------------------------------------------------
// 7. Validation

describe("validation", () => {
  const astral = "\u{1D400}"; // 𝐀, a letter outside the BMP: one code point, two UTF-16 units

  test.each([
    ["missing", ""],
    ["empty", "q="],
    ["spaces only", "q=%20%20%20"],
    ["tabs and newlines only", "q=%09%0A%0D%20"],
    ["257 characters", `q=${"a".repeat(257)}`],
    ["257 code points outside the BMP", `q=${encodeURIComponent(astral.repeat(257))}`],
    ["1025 characters", `q=${"b".repeat(1025)}`],
    ["2000 spaces around one letter", `q=${"%20".repeat(1000)}x${"%20".repeat(1000)}`],
    ["given twice", "q=hello&q=world"],
  ])("q %s → 400 VALIDATION_FAILED naming q", async (_label, query) => {
    await expectError(await searchRaw(alice.token, query), 400, "VALIDATION_FAILED", "q");
  });

  test.each([
    ["256 characters", "a".repeat(256)],
    ["256 code points outside the BMP", astral.repeat(256)],
    ["256 characters inside spaces (trimmed)", `  ${"c".repeat(256)}  `],
    ["one character", "x"],
  ])("q of %s → 200", async (_label, q) => {
    expect(await search(alice, { q })).toEqual(expect.any(Array));
  });

  test("q is trimmed before it is used", async () => {
    const x = word();
    const message = await postIn(alice, await room(alice), `trim ${x}`);
    expect(await found(alice, { q: `   ${x}\t\n` })).toEqual([message.id]);
  });

  const badIds = ["0", "-1", "abc", "1.5", "2147483648", "99999999999", "1e3", "0x10", "%207", ""];

  test.each(badIds)("channelId=%p → 400 VALIDATION_FAILED naming channelId", async (value) => {
    await expectError(await searchRaw(alice.token, `q=hello&channelId=${value}`), 400, "VALIDATION_FAILED", "channelId");
  });

  test.each(badIds)("before=%p → 400 VALIDATION_FAILED naming before", async (value) => {
    await expectError(await searchRaw(alice.token, `q=hello&before=${value}`), 400, "VALIDATION_FAILED", "before");
  });

  test.each(["0", "101", "abc", "-1", "1.5", "", "1e1", "99999999999"])("limit=%p → 400 VALIDATION_FAILED naming limit", async (value) => {
    await expectError(await searchRaw(alice.token, `q=hello&limit=${value}`), 400, "VALIDATION_FAILED", "limit");
  });

  test("several bad fields are all named", async () => {
    const { error } = await expectError(await searchRaw(alice.token, "q=&channelId=0&before=x&limit=0"), 400, "VALIDATION_FAILED");
    expect(error.details!.map((d) => d.path).sort()).toEqual(["before", "channelId", "limit", "q"]);
  });
});

// ---------------------------------------------------------------------------------------
// 8. q is user text: nothing in it can make the query fail

describe("hostile queries", () => {
  const enc = encodeURIComponent;
  // [label, q as sent (percent-encoded), whether the answer must be []]
  const rows: [string, string, boolean][] = [
    ["a single quote", enc("'"), true],
    ["a double quote", enc('"'), true],
    ["two single quotes", enc("''"), true],
    ["quotes around a word", enc(`'hello' "world"`), false],
    ["a & b", enc("a & b"), false],
    ["a | b", enc("a | b"), false],
    ["!a", enc("!a"), false],
    ["(a", enc("(a"), false],
    ["a:*", enc("a:*"), false],
    ["a <-> b", enc("a <-> b"), false],
    ["<2>", enc("<2>"), false],
    ["*", enc("*"), true],
    [":", enc(":"), true],
    ["&&&", enc("&&&"), true],
    ["!!!", enc("!!!"), true],
    ["weights and prefix flags: a:AB & b:*D", enc("a:AB & b:*D"), false],
    ["SQL injection", enc("'; DROP TABLE messages; --"), false],
    ["SQL tautology", enc("1' OR '1'='1"), false],
    ["backslashes", enc("\\ \\\\ a\\ \\'"), false],
    ["% and _", enc("100% _under_ %_%"), false],
    ["a NUL character", enc("hel\u0000lo"), false],
    ["only a NUL character", "%00", true],
    ["a lone surrogate as UTF-8 bytes", "%ED%A0%80", false],
    ["a lone surrogate among words", "hello%ED%A0%80world", false],
    ["invalid percent-encoding", "%E0%A4%A", false],
    ["emoji only", enc("😀🎉👍🏽"), true],
    ["only punctuation", enc(".,;:!?-—()[]{}<>/\\|@#$^~`+=*"), true],
    ["English stopwords only", enc("the a of"), false],
    ["Russian stopwords only", enc("и в на"), false],
    ["a 256-character single word", "w".repeat(256), false],
    ["a 256-character Cyrillic word", enc("ж".repeat(256)), false],
    ["combining marks", enc("e\u0301\u0301\u0301 \u0301\u0308 a\u20DD"), false],
    ["only combining marks", enc("\u0301\u0308\u0301"), false],
    ["256 musical symbols NFC turns into 768 code points", enc("\u{1D160}".repeat(256)), false],
    ["256 Devanagari letters NFC turns into letter + nukta", enc("\u0958".repeat(256)), false],
    ["Arabic", enc("مرحبا بالعالم"), false],
    ["Chinese", enc("你好，世界"), false],
    ["Hindi", enc("नमस्ते दुनिया"), false],
    ["3.14", enc("3.14"), false],
    ["2024", "2024", false],
    ["-1e308", enc("-1e308"), false],
    ["a URL", enc("https://example.com/a?b=c&d=e#f"), false],
    ["an e-mail address", enc("someone@example.com"), false],
    ["HTML", enc("<b>bold</b> <script>alert(1)</script>"), false],
    ["more than 16 words", enc(Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ")), false],
    ["a JSON object", enc('{"q": ["a", 1]}'), false],
    ["a private-use marker", enc("\uE000hello\uE001"), false],
    ["right-to-left and zero-width characters", enc("\u202Ehello\u200B\u200Dworld\uFEFF"), false],
  ];

  test.each(rows)("q = %s → 200 and an array", async (_label, q, empty) => {
    const hits = await expectStatus(await searchRaw(alice.token, `q=${q}`), 200);
    expect(Array.isArray(hits)).toBe(true);
    for (const hit of hits) expectHitShape(hit);
    if (empty) expect(hits).toEqual([]);
  });

  test("after all of them the messages table is intact and a normal search works", async () => {
    const [{ exists }] = await t.database.sql`SELECT to_regclass('public.messages') IS NOT NULL AS exists`;
    expect(exists).toBe(true);
    const x = word();
    const message = await postIn(alice, GENERAL, `still here ${x}`);
    expect(await found(alice, { q: x })).toEqual([message.id]);
  });

  // If q reached to_tsquery as syntax, `!x` would mean "not x", `x | y` "either", and so on.
  test.each([
    ["!x is x (as a prefix, being the last word), not its negation", (x: string, _y: string) => `!${x}`, ["x", "xy"]],
    ["!y x is y and x, not 'x without y'", (x: string, y: string) => `!${y} ${x}`, ["xy"]],
    ["x | y needs both words (no OR)", (x: string, y: string) => `${x} | ${y}`, ["xy"]],
    ["x & y needs both words", (x: string, y: string) => `${x} & ${y}`, ["xy"]],
    ["x <-> y is just x y", (x: string, y: string) => `${x} <-> ${y}`, ["xy"]],
    ["quoted and parenthesised words are words", (x: string, y: string) => `('${x}' & "${y}")`, ["xy"]],
    ["x:* is x as a prefix, as always", (x: string, _y: string) => `${x}:*`, ["x", "xy"]],
    ["%, _ and \\ are not patterns", (x: string, _y: string) => `${x}% \\${x}_`, ["x", "xy"]],
  ] as const)("%s", async (_label, query, expected) => {
    const x = word();
    const y = word();
    const channelId = await room(alice);
    const [onlyX, both, onlyY] = await postAll(alice, channelId, [`${x} alone`, `${x} with ${y}`, `${y} alone`]);
    const byName = { x: onlyX!.id, xy: both!.id, y: onlyY!.id };
    const got = await found(alice, { q: query(x, y), channelId });
    const numeric = (a: number, b: number) => a - b;
    expect(got.sort(numeric)).toEqual(expected.map((k) => byName[k]).sort(numeric));
  });

  test("SQL in q is searched for as words", async () => {
    const channelId = await room(alice);
    const [message] = await postAll(alice, channelId, ["please never drop the table of messages", "drop it"]);
    expect(await found(alice, { q: "'; DROP TABLE messages; --", channelId })).toEqual([message!.id]);
  });
});

// ---------------------------------------------------------------------------------------
// 9. Deleted and edited messages

describe("deleted and edited messages", () => {
  test("a deleted message is not found any more", async () => {
    const x = word();
    const channelId = await room(alice);
    const [gone, kept] = await postAll(alice, channelId, [`first ${x}`, `second ${x}`]);
    expect(await found(alice, { q: x })).toEqual([kept!.id, gone!.id]);
    await expectStatus(await api("DELETE", `/api/messages/${gone!.id}`, alice.token), 204);
    expect(await found(alice, { q: x })).toEqual([kept!.id]);
    expect(await found(alice, { q: `first ${x}`, channelId })).toEqual([]);
  });

  test("a row marked deleted is never returned, even while it still has its text", async () => {
    const x = word();
    const message = await postIn(alice, await room(alice), `soft ${x}`);
    await t.database.sql`UPDATE messages SET deleted_at = now() WHERE id = ${message.id}`;
    expect(await found(alice, { q: x })).toEqual([]);
  });

  test("an edited message is found by its new words, not its old ones, with editedAt", async () => {
    const before = word();
    const after = word();
    const channelId = await room(alice);
    const original = await postIn(alice, channelId, `draft ${before}`);
    const edited: ChatMessage = await expectStatus(await api("PATCH", `/api/messages/${original.id}`, alice.token, { content: `final ${after}` }), 200);
    // The edit's answer is the message as history has it: no seq (api.md §11).
    expect(edited).toEqual({ ...asHistory(original), content: `final ${after}`, editedAt: expect.stringMatching(isoTime) });
    expect(await found(alice, { q: before })).toEqual([]);
    const hits = await search(alice, { q: after });
    expect(hits).toEqual([{ message: edited, highlight: expect.any(String) }]);
    expectExcerpt(hits[0]!.highlight, edited.content, [after]);
  });
});

// ---------------------------------------------------------------------------------------
// 10. The GIN index

describe("index", () => {
  // The document each message is searched by: stored in messages.search_vector, generated from the
  // content with this expression (the previous index's), GIN-indexed by messages_search_idx.
  const documentExpression = "(to_tsvector('russian'::regconfig, content) || to_tsvector('simple'::regconfig, content))";

  test("messages.search_vector is generated from the content with exactly that expression, and messages_search_idx indexes it", async () => {
    const [{ generated, expression }] = await t.database.sql`
      SELECT attgenerated AS generated, pg_get_expr(adbin, adrelid) AS expression
        FROM pg_attribute JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
       WHERE attrelid = 'messages'::regclass AND attname = 'search_vector'`;
    expect({ generated, expression }).toEqual({ generated: "s", expression: documentExpression });
    const [{ def }] = await t.database.sql`SELECT pg_get_indexdef('messages_search_idx'::regclass) AS def`;
    expect(def).toContain("USING gin (search_vector)");
    const source = await Bun.file(new URL("../src/messages/messages.search.ts", import.meta.url)).text();
    expect(source).toContain("Prisma.sql`m.search_vector`");
  });

  test("an edit and a deletion keep the stored vector current", async () => {
    const channelId = await room(alice);
    const [before, after] = [word(), word()];
    const posted = await postIn(alice, channelId, `vector ${before}`);
    const vector = async () => ((await t.database.sql`SELECT search_vector::text AS v FROM messages WHERE id = ${posted.id}`)[0] as { v: string }).v;
    expect(await vector()).toContain(`'${before}'`);
    await expectStatus(await api("PATCH", `/api/messages/${posted.id}`, alice.token, { content: `vector ${after}` }), 200);
    expect(await vector()).not.toContain(`'${before}'`);
    expect(await vector()).toContain(`'${after}'`);
    await expectStatus(await api("DELETE", `/api/messages/${posted.id}`, alice.token), 204);
    expect(await vector()).toBe("");
  });

  test("with sequential scans off, a search over the stored vector uses messages_search_idx", async () => {
    const plan = await t.database.sql.begin(async (tx) => {
      await tx`SET LOCAL enable_seqscan = off`;
      return tx.unsafe(
        `EXPLAIN SELECT m.id FROM messages m
         WHERE m.search_vector @@ (to_tsquery('russian'::regconfig, 'hello:*') || to_tsquery('simple'::regconfig, 'hello:*'))
           AND m.deleted_at IS NULL`,
      );
    });
    const text = (plan as Record<string, string>[]).map((row) => Object.values(row).join(" ")).join("\n");
    expect(text).toContain("messages_search_idx");
  });
});

