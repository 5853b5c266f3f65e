import { beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { expectError } from "./helpers/expect-error.ts";
import { startFakeLlm, type FakeAnswer, type FakeLlmRequest } from "./helpers/fake-llm.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { startTestServer, type Json, type Registered } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §10 summaries: GET /api/channels/:id/summary?since=|last= through a scripted
// chat-completions server (no model server is reachable here), with a small context so long
// ranges are chunked; the cache per range in channel_summaries and its invalidation by edits and
// deletions; LLM_DISABLED without LLM_BASE_URL; UNAVAILABLE when the model fails.

const CONTEXT_TOKENS = 600;
const env = { LLM_BASE_URL: "", LLM_MODEL: "test-model", LLM_TIMEOUT_MS: "500", LLM_CONTEXT_TOKENS: String(CONTEXT_TOKENS) };

/** Replies that say which kind of prompt they answer, so the tests can follow the calls. */
function scripted(request: FakeLlmRequest): FakeAnswer {
  const part = /^Summarise part (\d+) of (\d+)/.exec(request.prompt);
  if (part) return { reply: `PARTIAL-${part[1]}-of-${part[2]}` };
  if (request.prompt.startsWith("These are summaries")) return { reply: `COMBINED(${request.prompt.split("\n").filter((l) => l.startsWith("PARTIAL") || l.startsWith("COMBINED")).length})` };
  return { reply: `SUMMARY of ${promptLines(request).length} lines` };
}

const fake = startFakeLlm(scripted);
env.LLM_BASE_URL = fake.baseUrl;
const t = await startTestServer({ env });
const api = apiFor(t);

beforeEach(() => fake.answer(scripted));

const isoTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function publicChannel(owner: Registered, name = `c${crypto.randomUUID().slice(0, 8)}`): Promise<number> {
  return (await expectStatus(await api("POST", "/api/channels", owner.token, { name, kind: "public" }), 201)).id;
}

async function post(user: Registered, channelId: number, content: string): Promise<Json> {
  return expectStatus(await api("POST", "/api/messages", user.token, { content, channelId }), 201);
}

const summaryOf = (user: Registered, channelId: number, query: string) => api("GET", `/api/channels/${channelId}/summary?${query}`, user.token);

/** The `username: content` lines a request carried. */
const promptLines = (request: FakeLlmRequest) => request.prompt.split("\n").filter((l) => /^\S+: /.test(l));

/** Calls made by `action`. */
async function callsDuring(action: () => Promise<unknown>): Promise<FakeLlmRequest[]> {
  const before = fake.requests.length;
  await action();
  return fake.requests.slice(before);
}

describe("ranges", () => {
  test("last=N summarises the newest N messages, as `username: content` lines in id order, in one call", async () => {
    const alice = await t.register();
    const bob = await t.register();
    const channelId = await publicChannel(alice);
    await expectStatus(await api("POST", `/api/channels/${channelId}/join`, bob.token), 200);
    const sent: Json[] = [];
    for (const [i, who] of [alice, bob, alice, bob, alice].entries()) sent.push(await post(who, channelId, `message ${i} with\na second line`));

    let body: Json;
    const calls = await callsDuring(async () => (body = await expectStatus(await summaryOf(bob, channelId, "last=3"), 200)));
    expect(Object.keys(body).sort()).toEqual(["from", "messageCount", "model", "summary", "to"]);
    expect(body).toEqual({ summary: "SUMMARY of 3 lines", messageCount: 3, from: sent[2].timestamp, to: sent[4].timestamp, model: "test-model" });
    expect(body.from).toMatch(isoTime);
    expect(calls).toHaveLength(1);
    const [call] = calls;
    expect(call!.model).toBe("test-model");
    expect(call!.messages[0]).toMatchObject({ role: "system" });
    expect(call!.messages[0]!.content).toMatch(/concise/i);
    expect(call!.messages[0]!.content).toMatch(/language/i);
    expect(promptLines(call!)).toEqual([2, 3, 4].map((i) => `${sent[i].username}: message ${i} with a second line`));
  });

  test("since= summarises the messages sent at or after the time; deleted ones are left out", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    await post(alice, channelId, "before the range");
    await Bun.sleep(30);
    const since = new Date().toISOString();
    await Bun.sleep(30);
    const inside = [await post(alice, channelId, "first inside"), await post(alice, channelId, "erased inside"), await post(alice, channelId, "last inside")];
    await expectStatus(await api("DELETE", `/api/messages/${inside[1].id}`, alice.token), 204);

    let body: Json;
    const calls = await callsDuring(async () => (body = await expectStatus(await summaryOf(alice, channelId, `since=${encodeURIComponent(since)}`), 200)));
    expect(body).toEqual({ summary: "SUMMARY of 2 lines", messageCount: 2, from: inside[0].timestamp, to: inside[2].timestamp, model: "test-model" });
    expect(calls.flatMap(promptLines)).toEqual([`${alice.user.username}: first inside`, `${alice.user.username}: last inside`]);
  });

  test("an empty range answers 200 with messageCount 0, from/to null and no model call", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    const calls = await callsDuring(async () => {
      expect(await expectStatus(await summaryOf(alice, channelId, "last=10"), 200)).toEqual({ summary: "", messageCount: 0, from: null, to: null, model: "test-model" });
      expect(await expectStatus(await summaryOf(alice, 1, `since=${new Date().toISOString()}`), 200)).toMatchObject({ messageCount: 0 });
    });
    expect(calls).toEqual([]);
  });
});

describe("who may read", () => {
  test("non-members are refused exactly as the channel's history refuses them (404 private, 403 public not joined); no token 401", async () => {
    const owner = await t.register();
    const stranger = await t.register();
    const open = await publicChannel(owner);
    const closed = (await expectStatus(await api("POST", "/api/channels", owner.token, { name: "secret", kind: "private" }), 201)).id;
    await post(owner, open, "hello");
    await post(owner, closed, "hello");
    const calls = await callsDuring(async () => {
      for (const [channelId, status, code] of [
        [closed, 404, "NOT_FOUND"],
        [open, 403, "FORBIDDEN"],
        [2_000_000_000, 404, "NOT_FOUND"],
      ] as const) {
        await expectError(await api("GET", `/api/channels/${channelId}/messages`, stranger.token), status, code);
        await expectError(await summaryOf(stranger, channelId, "last=5"), status, code);
      }
      await expectError(await api("GET", `/api/channels/${open}/summary?last=5`, undefined), 401, "UNAUTHORIZED");
    });
    expect(calls).toEqual([]);
  });
});

describe("bad queries", () => {
  const cases: [string, string, string][] = [
    ["neither since nor last", "", "last"],
    ["both since and last", "since=2020-01-01T00:00:00Z&last=5", "last"],
    ["last=0", "last=0", "last"],
    ["last=1001", "last=1001", "last"],
    ["last not an integer", "last=1.5", "last"],
    ["last empty", "last=", "last"],
    ["since not a date", "since=yesterday", "since"],
    ["since without a time", "since=2020-01-01", "since"],
    ["since an impossible date", "since=2020-13-45T00:00:00Z", "since"],
    ["since in the future", "since=2999-01-01T00:00:00Z", "since"],
  ];
  test.each(cases)("%s → 400 VALIDATION_FAILED naming the field, no model call", async (_name, query, path) => {
    const alice = await t.register();
    const calls = await callsDuring(async () => {
      const { error } = await expectError(await summaryOf(alice, 1, query), 400, "VALIDATION_FAILED", path);
      expect(error.details!.length).toBeGreaterThan(0);
    });
    expect(calls).toEqual([]);
  });

  test("a time with an offset is accepted", async () => {
    const alice = await t.register();
    await expectStatus(await summaryOf(alice, 1, `since=${encodeURIComponent("2020-01-01T03:00:00+03:00")}&`), 200);
  });
});

describe("model failures", () => {
  const failures: [string, FakeAnswer][] = [
    ["a 500", { status: 500 }],
    ["no answer within LLM_TIMEOUT_MS", { reply: "too late", delayMs: 1_500 }],
    ["a body that is not JSON", { malformed: true }],
    ["an empty answer", { reply: "" }],
  ];
  test.each(failures)("%s → 503 UNAVAILABLE in the error shape, nothing cached", async (_name, answer) => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    await post(alice, channelId, "something to summarise");
    fake.answer(() => answer);
    const started = performance.now();
    const { error } = await expectError(await summaryOf(alice, channelId, "last=5"), 503, "UNAVAILABLE");
    expect(error.message).toMatch(/model/i);
    expect(performance.now() - started).toBeLessThan(3_000);
    fake.answer(scripted);
    // The failure was not cached: the next request asks again, and succeeds.
    const calls = await callsDuring(async () => expect(await expectStatus(await summaryOf(alice, channelId, "last=5"), 200)).toMatchObject({ summary: "SUMMARY of 1 lines" }));
    expect(calls).toHaveLength(1);
  });

  test("one failing chunk of a long range fails the whole summary with 503 UNAVAILABLE", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    for (let i = 0; i < 20; i++) await post(alice, channelId, `line ${i} ${"x".repeat(120)}`);
    fake.answer((request) => (request.prompt.startsWith("Summarise part 2 ") ? { status: 500 } : scripted(request)));
    await expectError(await summaryOf(alice, channelId, "last=20"), 503, "UNAVAILABLE");
  });
});

test("without LLM_BASE_URL: 503 LLM_DISABLED saying no model server is configured, after auth and validation, before anything else", async () => {
  const off = await startTestServer({ database: t.database });
  const offApi = apiFor(off);
  const alice = await t.register();
  const channelId = await publicChannel(alice);
  await post(alice, channelId, "hello");
  const calls = await callsDuring(async () => {
    const { error } = await expectError(await offApi("GET", `/api/channels/${channelId}/summary?last=5`, alice.token), 503, "LLM_DISABLED");
    expect(error.message).toMatch(/no model server is configured/i);
    await expectError(await offApi("GET", `/api/channels/${channelId}/summary?last=5`, undefined), 401, "UNAUTHORIZED");
    await expectError(await offApi("GET", `/api/channels/${channelId}/summary?last=0`, alice.token), 400, "VALIDATION_FAILED", "last");
    // The rest of the service is unchanged.
    await expectStatus(await offApi("GET", `/api/channels/${channelId}/messages`, alice.token), 200);
  });
  expect(calls).toEqual([]);
});

/** Rough tokens as the service counts them, for checking each request against the context. */
const tokensOf = (request: FakeLlmRequest) => request.messages.reduce((sum, m) => sum + Math.ceil(m.content.length / 3) + 8, 0);

describe("long ranges", () => {
  test("are summarised chunk by chunk (each request within the context), then combined by one more call", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    const sent: Json[] = [];
    for (let i = 0; i < 30; i++) sent.push(await post(alice, channelId, `point ${String(i).padStart(2, "0")}: ${"детали обсуждения ".repeat(5)}`));
    let body: Json;
    const calls = await callsDuring(async () => (body = await expectStatus(await summaryOf(alice, channelId, "last=30"), 200)));

    const parts = calls.filter((c) => c.prompt.startsWith("Summarise part"));
    const combining = calls.filter((c) => c.prompt.startsWith("These are summaries"));
    expect(parts.length).toBeGreaterThan(2);
    expect(combining).toHaveLength(1);
    expect(calls).toHaveLength(parts.length + 1);
    // The combining call comes last, after every chunk has answered, and carries every partial summary.
    expect(calls.at(-1)).toBe(combining[0]!);
    for (let i = 1; i <= parts.length; i++) expect(combining[0]!.prompt).toContain(`PARTIAL-${i}-of-${parts.length}`);
    expect(body).toEqual({ summary: `COMBINED(${parts.length})`, messageCount: 30, from: sent[0].timestamp, to: sent[29].timestamp, model: "test-model" });
    // Each message in exactly one chunk, in order; each request leaves room for its answer in the context.
    const order = (c: FakeLlmRequest) => Number(/^Summarise part (\d+)/.exec(c.prompt)![1]);
    expect(parts.sort((a, b) => order(a) - order(b)).flatMap(promptLines)).toEqual(sent.map((m) => `${m.username}: ${m.content}`));
    for (const call of calls) expect(tokensOf(call)).toBeLessThanOrEqual(CONTEXT_TOKENS * 0.8);
  });

  test("partial summaries that do not fit one prompt are combined level after level", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    for (let i = 0; i < 30; i++) await post(alice, channelId, `topic ${i}: ${"a long discussion ".repeat(5)}`);
    // Long partial summaries: two fill a prompt, so combining them takes more than one level.
    let combined = 0;
    fake.answer((request) => {
      if (request.prompt.startsWith("Summarise part")) return { reply: `partial ${"p".repeat(400)}` };
      if (request.prompt.startsWith("These are summaries")) return { reply: `combined ${++combined} ${"c".repeat(400)}` };
      return { status: 500 };
    });
    let body: Json;
    const calls = await callsDuring(async () => (body = await expectStatus(await summaryOf(alice, channelId, "last=30"), 200)));
    const combining = calls.filter((c) => c.prompt.startsWith("These are summaries"));
    expect(combining.length).toBeGreaterThan(1);
    // The last call combines earlier combinations; its answer is the summary.
    expect(calls.at(-1)!.prompt).toContain("combined ");
    expect(body.summary).toBe(`combined ${combined} ${"c".repeat(400)}`);
    for (const call of calls) expect(tokensOf(call)).toBeLessThanOrEqual(CONTEXT_TOKENS * 0.8);
  });
});

describe("cache", () => {
  test("the same range twice makes one set of model calls, also for another instance on the same database", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    for (let i = 0; i < 20; i++) await post(alice, channelId, `cached ${i} ${"y".repeat(100)}`);
    let first: Json;
    const firstCalls = await callsDuring(async () => (first = await expectStatus(await summaryOf(alice, channelId, "last=20"), 200)));
    expect(firstCalls.length).toBeGreaterThan(1);

    const again = await callsDuring(async () => expect(await expectStatus(await summaryOf(alice, channelId, "last=20"), 200)).toEqual(first));
    expect(again).toEqual([]);
    const [{ count }] = await t.database.sql`SELECT count(*)::int AS count FROM channel_summaries WHERE channel_id = ${channelId}`;
    expect(count).toBe(1);

    const other = await startTestServer({ database: t.database, env });
    const elsewhere = await callsDuring(async () => expect(await expectStatus(await apiFor(other)("GET", `/api/channels/${channelId}/summary?last=20`, alice.token), 200)).toEqual(first));
    expect(elsewhere).toEqual([]);
  });

  test("concurrent requests for one range share one set of calls", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    await post(alice, channelId, "once");
    const calls = await callsDuring(async () => {
      const bodies = await Promise.all([1, 2, 3].map(async () => expectStatus(await summaryOf(alice, channelId, "last=1"), 200)));
      expect(new Set(bodies.map((b) => b.summary)).size).toBe(1);
    });
    expect(calls).toHaveLength(1);
  });

  /** Rows cached for the channel, polled until `expected` (invalidation runs right after the change is published). */
  async function expectCachedRows(channelId: number, expected: number) {
    let count = -1;
    for (let i = 0; i < 40; i++) {
      [{ count }] = await t.database.sql`SELECT count(*)::int AS count FROM channel_summaries WHERE channel_id = ${channelId}`;
      if (count === expected) break;
      await Bun.sleep(25);
    }
    expect(count).toBe(expected);
  }

  for (const change of ["edit", "delete"] as const) {
    test(`${change === "edit" ? "an" : "a"} ${change} inside the range invalidates it (the next request asks the model again); one outside does not`, async () => {
      const alice = await t.register();
      const channelId = await publicChannel(alice);
      const outside = await post(alice, channelId, "outside the range");
      await Bun.sleep(30);
      const since = encodeURIComponent(new Date().toISOString());
      await Bun.sleep(30);
      const inside = [await post(alice, channelId, "one"), await post(alice, channelId, "two"), await post(alice, channelId, "three")];
      const act = (message: Json) =>
        change === "edit"
          ? api("PATCH", `/api/messages/${message.id}`, alice.token, { content: `${message.content}, edited` })
          : api("DELETE", `/api/messages/${message.id}`, alice.token);

      expect(await callsDuring(async () => expectStatus(await summaryOf(alice, channelId, `since=${since}`), 200))).toHaveLength(1);
      await expectCachedRows(channelId, 1);

      // Outside the range: still cached.
      expect((await act(outside)).status).toBe(change === "edit" ? 200 : 204);
      await Bun.sleep(100);
      await expectCachedRows(channelId, 1);
      expect(await callsDuring(async () => expectStatus(await summaryOf(alice, channelId, `since=${since}`), 200))).toEqual([]);

      // Inside (the middle one: the range keeps its first and last message, so its key is the same).
      expect((await act(inside[1])).status).toBe(change === "edit" ? 200 : 204);
      let body: Json;
      const calls = await callsDuring(async () => (body = await expectStatus(await summaryOf(alice, channelId, `since=${since}`), 200)));
      expect(calls).toHaveLength(1);
      if (change === "edit") {
        expect(promptLines(calls[0]!)).toContain(`${alice.user.username}: two, edited`);
        expect(body.messageCount).toBe(3);
      } else {
        expect(promptLines(calls[0]!).join("\n")).not.toContain(": two");
        expect(body).toMatchObject({ messageCount: 2, from: inside[0].timestamp, to: inside[2].timestamp });
      }
      // Cached again, and the row for the old text is gone.
      expect(await callsDuring(async () => expectStatus(await summaryOf(alice, channelId, `since=${since}`), 200))).toEqual([]);
      await expectCachedRows(channelId, 1);
    });
  }

  test("the edit hook deletes the rows whose range holds the message, in that channel only", async () => {
    const alice = await t.register();
    const channelId = await publicChannel(alice);
    const messages = [await post(alice, channelId, "a"), await post(alice, channelId, "b"), await post(alice, channelId, "c")];
    await expectStatus(await summaryOf(alice, channelId, "last=3"), 200);
    await expectStatus(await summaryOf(alice, channelId, "last=1"), 200);
    await expectCachedRows(channelId, 2);
    // Editing the first message: only the last=3 row holds it.
    await expectStatus(await api("PATCH", `/api/messages/${messages[0].id}`, alice.token, { content: "a, edited" }), 200);
    await expectCachedRows(channelId, 1);
    const [row] = await t.database.sql`SELECT from_id, to_id FROM channel_summaries WHERE channel_id = ${channelId}`;
    expect(row).toEqual({ from_id: messages[2].id, to_id: messages[2].id });
  });
});
