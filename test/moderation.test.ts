import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { expectError } from "./helpers/expect-error.ts";
import { startFakeLlm, type FakeAnswer } from "./helpers/fake-llm.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { until } from "./helpers/locks.ts";
import { asHistory, record } from "./helpers/recorder.ts";
import { sendWithAck, startTestServer, uniqueName, type ChatClient, type Json, type Registered, type TestServer } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §10, moderation (issue 8 items 2 and 4): the word list first, then the model; block refuses
// before storing, flag delivers and lists for moderators, MODERATION_FAIL decides on model failures,
// every model decision and every refusal is audited, and per-channel order holds with checks running
// concurrently. The model is a scripted fake (test/helpers/fake-llm.ts) answering by a marker in the text.

const answers = {
  allow: { reply: '{"allowed": true, "reason": "harmless"}' },
  refuse: { reply: '{"allowed": false, "reason": "insults another member"}' },
  fenced: { reply: 'Here is my verdict:\n```json\n{"allowed": false, "reason": "spam link"}\n```\nHope this helps!' },
  prose: { reply: "This message seems perfectly fine to me, nothing to worry about." },
  slow: { reply: '{"allowed": true, "reason": "late"}', delayMs: 1_500 },
  http500: { status: 500 },
  malformed: { malformed: true },
} satisfies Record<string, FakeAnswer>;
type AnswerName = keyof typeof answers;

/** The order test's checks being answered right now, and the most at once. */
const randomChecks = { now: 0, most: 0 };
const script = async (request: { prompt: string }): Promise<FakeAnswer> => {
  const marker = /\[(\w+)\]/.exec(request.prompt)?.[1] ?? "allow";
  // Random delays, some refusals: the order test.
  if (marker === "rand" || marker === "randr") {
    randomChecks.now++;
    randomChecks.most = Math.max(randomChecks.most, randomChecks.now);
    await Bun.sleep(Math.random() * 120);
    randomChecks.now--;
    return marker === "randr" ? answers.refuse : answers.allow;
  }
  return answers[marker as AnswerName] ?? answers.allow;
};
const fake = startFakeLlm(script);

const WORDS = "darn,Плохо,buy now";
type Mode = "off" | "flag" | "block";
type Fail = "open" | "closed";
const adminName = uniqueName("admin");
const llmEnv = { LLM_BASE_URL: fake.baseUrl, LLM_MODEL: "test-model", LLM_TIMEOUT_MS: "500", LLM_MAX_RETRIES: "0" };
const envFor = (mode: Mode, fail: Fail, withModel = true) => ({
  MODERATION: mode,
  MODERATION_FAIL: fail,
  MODERATION_WORDS: WORDS,
  ADMIN_USERNAMES: adminName,
  ...(withModel ? llmEnv : {}),
});

// Every server shares one database (users and tokens work on all of them).
const base = await startTestServer({ env: envFor("off", "open") });
const { sql } = base.database;
const servers = new Map<string, TestServer>([["off/open", base]]);
for (const mode of ["off", "flag", "block"] as const) {
  for (const fail of ["open", "closed"] as const) {
    if (!servers.has(`${mode}/${fail}`)) servers.set(`${mode}/${fail}`, await startTestServer({ database: base.database, env: envFor(mode, fail) }));
  }
}
const wordsOnly = await startTestServer({ database: base.database, env: envFor("block", "closed", false) });
const server = (mode: Mode, fail: Fail) => servers.get(`${mode}/${fail}`)!;

const sender = await base.register();
const listener = await base.register();
const admin = await base.register(adminName);
const moderator = await base.register();
await expectStatus(await apiFor(base)("PATCH", `/api/users/${moderator.user.id}`, admin.token, { role: "moderator" }), 200);

/** A channel of its own for each case (audit rows are told apart by it), with sockets of sender and listener in it. */
async function room(t: TestServer) {
  const api = apiFor(t);
  const channel = await expectStatus(await api("POST", "/api/channels", sender.token, { name: uniqueName("mod"), kind: "public" }), 201);
  await expectStatus(await api("POST", `/api/channels/${channel.id}/join`, listener.token), 200);
  const [from, to] = await Promise.all([t.connect(sender.token), t.connect(listener.token)]);
  const heard = record(to);
  const close = () => {
    from.disconnect();
    to.disconnect();
  };
  return { api, channelId: channel.id as number, from, to, heard, close };
}

type Stored = { id: number; content: string };
const storedWith = async (content: string): Promise<Stored[]> => [...(await sql<Stored[]>`SELECT id, content FROM messages WHERE content = ${content}`)];
const modelCalls = (content: string) => fake.requests.filter((r) => r.prompt === content).length;
type AuditRow = { action: string; actor_id: number; target_type: string; target_id: string; meta: Json };
const auditOf = async (channelId: number): Promise<AuditRow[]> => [
  ...(await sql<AuditRow[]>`SELECT action, actor_id, target_type, target_id, meta FROM audit_log
                  WHERE action IN ('moderation_decision', 'message_rejected', 'message_flagged') AND meta->>'channelId' = ${String(channelId)} ORDER BY id`),
];
type FlagRow = { source: string; reason: string; user_id: number; channel_id: number };
const flagsOf = async (messageId: number): Promise<FlagRow[]> => [
  ...(await sql<FlagRow[]>`SELECT source, reason, user_id, channel_id FROM moderation_flags WHERE message_id = ${messageId}`),
];

/** Sends `content`, then an allowed fence; returns the ack and what the listener heard before the fence. */
async function sendWithFence(r: Awaited<ReturnType<typeof room>>, content: string) {
  const ack = await sendWithAck(r.from, { content, channelId: r.channelId });
  const fenceText = `fence ${crypto.randomUUID()}`;
  const fence = await sendWithAck(r.from, { content: fenceText, channelId: r.channelId });
  expect(fence.ok).toBe(true);
  const heard = await r.heard.until(([event, m]) => event === "message" && (m as Json).content === fenceText);
  return { ack, fenceId: fence.message.id as number, heard: heard.filter(([e]) => e === "message").map(([, m]) => (m as Json).content as string) };
}

// ---------------------------------------------------------------------------------------
// Every mode × every model answer × MODERATION_FAIL

type ModelOutcome = { outcome: "allowed" | "refused" | "failed"; reason: RegExp; failure?: string };
const modelSays: Record<AnswerName, ModelOutcome> = {
  allow: { outcome: "allowed", reason: /^harmless$/ },
  refuse: { outcome: "refused", reason: /^insults another member$/ },
  fenced: { outcome: "refused", reason: /^spam link$/ },
  prose: { outcome: "failed", reason: /^moderation was unavailable \(the model's answer could not be read\)$/, failure: "unreadable" },
  slow: { outcome: "failed", reason: /^moderation was unavailable \(the model did not answer in time\)$/, failure: "timeout" },
  http500: { outcome: "failed", reason: /^moderation was unavailable \(the model server failed\)$/, failure: "error" },
  malformed: { outcome: "failed", reason: /^moderation was unavailable \(the model server failed\)$/, failure: "error" },
};

const rows: [Mode, Fail, AnswerName][] = (["off", "flag", "block"] as const).flatMap((mode) =>
  (["open", "closed"] as const).flatMap((fail) => (Object.keys(answers) as AnswerName[]).map((answer) => [mode, fail, answer] as [Mode, Fail, AnswerName])),
);

describe("every mode × every model answer × MODERATION_FAIL", () => {
  test.each(rows)("MODERATION=%s MODERATION_FAIL=%s, the model answers %s", async (mode, fail, answer) => {
    const t = server(mode, fail);
    const r = await room(t);
    try {
      const content = `[${answer}] ${mode} ${fail} ${crypto.randomUUID()}`;
      const said = modelSays[answer];
      // What the verdict comes to: a hit is a refusal, or a failure when closed.
      const hit = said.outcome === "refused" || (said.outcome === "failed" && fail === "closed");
      const { ack, fenceId, heard } = await sendWithFence(r, content);

      if (mode === "off") {
        expect(ack.ok).toBe(true);
        expect(modelCalls(content)).toBe(0);
        expect(heard).toContain(content);
        expect(await auditOf(r.channelId)).toEqual([]);
        expect(await flagsOf(ack.message.id)).toEqual([]);
        return;
      }
      expect(modelCalls(content)).toBe(1);
      expect(fake.requests.find((q) => q.prompt === content)!.messages[0]).toMatchObject({ role: "system", content: expect.stringContaining('"allowed"') });

      const decision = (rows: AuditRow[]) => rows.find((row) => row.action === "moderation_decision" && row.target_id !== String(fenceId));
      if (mode === "block" && hit) {
        // Refused: the ack names the reason; never stored, never broadcast.
        const inAck = new RegExp(`^Message rejected by moderation: ${said.reason.source.replace(/^\^/, "")}`);
        expect(ack).toEqual({ ok: false, error: { code: "MESSAGE_REJECTED", message: expect.stringMatching(inAck) } });
        expect(await storedWith(content)).toEqual([]);
        expect(heard).not.toContain(content);
        const audit = await auditOf(r.channelId);
        expect(decision(audit)).toMatchObject({
          actor_id: sender.user.id,
          target_type: "channel",
          target_id: String(r.channelId),
          meta: { mode, outcome: said.outcome, reason: expect.stringMatching(said.reason), latencyMs: expect.any(Number), model: "test-model", ...(said.failure ? { failure: said.failure } : {}) },
        });
        expect(audit.filter((row) => row.action === "message_rejected")).toEqual([
          { action: "message_rejected", actor_id: sender.user.id, target_type: "channel", target_id: String(r.channelId), meta: { mode, source: "model", reason: expect.stringMatching(said.reason), channelId: r.channelId } },
        ]);
        return;
      }
      // Delivered (allowed, failed open, or flag mode).
      expect(ack.ok).toBe(true);
      expect(await storedWith(content)).toEqual([{ id: ack.message.id, content }]);
      expect(heard).toContain(content);
      let audit: AuditRow[] = [];
      await until(async () => decision((audit = await auditOf(r.channelId))) !== undefined, "the model's decision is audited");
      expect(decision(audit)).toMatchObject({
        actor_id: sender.user.id,
        target_type: "message",
        target_id: String(ack.message.id),
        meta: { mode, outcome: said.outcome, reason: expect.stringMatching(said.reason), latencyMs: expect.any(Number), ...(said.failure ? { failure: said.failure } : {}) },
      });
      expect(audit.filter((row) => row.action === "message_rejected")).toEqual([]);
      // The flag is written with the decision, in one transaction.
      const flags = await flagsOf(ack.message.id);
      if (mode === "flag" && hit) {
        expect(flags).toEqual([{ source: "model", reason: expect.stringMatching(said.reason), user_id: sender.user.id, channel_id: r.channelId }]);
        expect(audit.filter((row) => row.action === "message_flagged")).toMatchObject([{ target_type: "message", target_id: String(ack.message.id), meta: { source: "model" } }]);
      } else {
        expect(flags).toEqual([]);
      }
    } finally {
      r.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// The word list

describe("the word list", () => {
  const words: [content: string, word: string | null][] = [
    ["well darn it", "darn"],
    ["DARN!", "darn"],
    ["ＤＡＲＮ, full width", "darn"],
    ["это плохо.", "плохо"],
    ["please Buy Now", "buy now"],
    ["darned and undarnable", null],
    ["плохой день", null],
    ["a classic", null],
  ];

  test.each(words)("block: %p → %p, and a hit needs no model call", async (text, word) => {
    const t = server("block", "closed");
    const r = await room(t);
    try {
      const content = `${text} ${crypto.randomUUID()}`;
      const { ack, heard } = await sendWithFence(r, content);
      if (word === null) {
        expect(ack.ok).toBe(true);
        expect(modelCalls(content)).toBe(1);
        return;
      }
      expect(ack).toEqual({ ok: false, error: { code: "MESSAGE_REJECTED", message: `Message rejected by moderation: contains the listed word "${word}"` } });
      expect(modelCalls(content)).toBe(0);
      expect(await storedWith(content)).toEqual([]);
      expect(heard).not.toContain(content);
      expect((await auditOf(r.channelId)).filter((row) => row.action !== "moderation_decision")).toEqual([
        { action: "message_rejected", actor_id: sender.user.id, target_type: "channel", target_id: String(r.channelId), meta: { mode: "block", source: "words", reason: `contains the listed word "${word}"`, channelId: r.channelId } },
      ]);
    } finally {
      r.close();
    }
  });

  test("flag: a hit is delivered and flagged with source words, without a model call", async () => {
    const r = await room(server("flag", "open"));
    try {
      const content = `oh darn ${crypto.randomUUID()}`;
      const { ack, heard } = await sendWithFence(r, content);
      expect(ack.ok).toBe(true);
      expect(heard).toContain(content);
      await until(async () => (await flagsOf(ack.message.id)).length > 0, "the flag");
      expect(await flagsOf(ack.message.id)).toEqual([{ source: "words", reason: 'contains the listed word "darn"', user_id: sender.user.id, channel_id: r.channelId }]);
      expect(modelCalls(content)).toBe(0);
    } finally {
      r.close();
    }
  });

  test("no model configured + MODERATION=block: the word list alone decides, the model is never asked", async () => {
    const r = await room(wordsOnly);
    try {
      const before = fake.requests.length;
      const bad = `[refuse] darn ${crypto.randomUUID()}`;
      const fine = `[refuse] fine ${crypto.randomUUID()}`;
      const refused = await sendWithFence(r, bad);
      expect(refused.ack).toMatchObject({ ok: false, error: { code: "MESSAGE_REJECTED" } });
      const allowed = await sendWithFence(r, fine);
      expect(allowed.ack.ok).toBe(true);
      expect(allowed.heard).toContain(fine);
      expect(fake.requests.length).toBe(before);
      expect((await auditOf(r.channelId)).map((row) => row.action)).toEqual(["message_rejected"]);
    } finally {
      r.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// REST, edits

describe("REST and edits", () => {
  test("POST /api/messages refused: 422 MESSAGE_REJECTED in the error shape, nothing stored", async () => {
    const api = apiFor(server("block", "open"));
    for (const content of [`[refuse] rest ${crypto.randomUUID()}`, `darn rest ${crypto.randomUUID()}`]) {
      const body = await expectError(await api("POST", "/api/messages", sender.token, { content }), 422, "MESSAGE_REJECTED");
      expect(body.error.message).toMatch(/^Message rejected by moderation: (insults another member|contains the listed word "darn")$/);
      expect(await storedWith(content)).toEqual([]);
    }
    const ok = `[allow] rest ${crypto.randomUUID()}`;
    const created = await expectStatus(await api("POST", "/api/messages", sender.token, { content: ok }), 201);
    expect(created.content).toBe(ok);
  });

  test("block: an edit goes through the same check; a refused edit leaves the text and broadcasts nothing", async () => {
    const r = await room(server("block", "closed"));
    try {
      const original = `[allow] edit me ${crypto.randomUUID()}`;
      const sent = await sendWithAck(r.from, { content: original, channelId: r.channelId });
      expect(sent.ok).toBe(true);
      for (const content of ["[refuse] sneaky edit", "darn sneaky edit", "[slow] sneaky edit"]) {
        const body = await expectError(await r.api("PATCH", `/api/messages/${sent.message.id}`, sender.token, { content }), 422, "MESSAGE_REJECTED");
        expect(body.error.message).toStartWith("Message rejected by moderation: ");
      }
      expect(await storedWith(original)).toEqual([{ id: sent.message.id, content: original }]);
      const rejected = (await auditOf(r.channelId)).filter((row) => row.action === "message_rejected");
      expect(rejected.map((row) => [row.target_type, row.target_id, row.meta.source, row.meta.edit])).toEqual([
        ["message", String(sent.message.id), "model", true],
        ["message", String(sent.message.id), "words", true],
        ["message", String(sent.message.id), "model", true],
      ]);
      const edited = await expectStatus(await r.api("PATCH", `/api/messages/${sent.message.id}`, sender.token, { content: "[allow] fine edit" }), 200);
      expect(edited.content).toBe("[allow] fine edit");
      await r.heard.until(([e]) => e === "message:updated");
      expect(r.heard.events.filter(([e]) => e === "message:updated").map(([, m]) => (m as Json).content)).toEqual(["[allow] fine edit"]);
    } finally {
      r.close();
    }
  });

  test("flag: an edit is applied and then flagged", async () => {
    const r = await room(server("flag", "open"));
    try {
      const sent = await sendWithAck(r.from, { content: `[allow] clean ${crypto.randomUUID()}`, channelId: r.channelId });
      await expectStatus(await r.api("PATCH", `/api/messages/${sent.message.id}`, sender.token, { content: "darn, edited" }), 200);
      await until(async () => (await flagsOf(sent.message.id)).length > 0, "the flag of the edit");
      expect(await flagsOf(sent.message.id)).toEqual([{ source: "words", reason: 'contains the listed word "darn"', user_id: sender.user.id, channel_id: r.channelId }]);
    } finally {
      r.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// GET /api/admin/flags

describe("GET /api/admin/flags", () => {
  test("moderators and admins: newest first, paged with before/limit, deleted messages as tombstones; users: 403", async () => {
    const t = server("flag", "closed");
    const api = apiFor(t);
    const r = await room(t);
    try {
      const contents = [`darn one ${crypto.randomUUID()}`, `[refuse] two ${crypto.randomUUID()}`, `[http500] three ${crypto.randomUUID()}`];
      const ids: number[] = [];
      for (const content of contents) {
        const ack = await sendWithAck(r.from, { content, channelId: r.channelId });
        ids.push(ack.message.id);
        await until(async () => (await flagsOf(ack.message.id)).length > 0, "the flag");
      }
      await expectStatus(await api("DELETE", `/api/messages/${ids[0]}`, sender.token), 204);

      const page = await expectStatus(await api("GET", "/api/admin/flags?limit=3", moderator.token), 200);
      expect(page.map((f: Json) => f.message.id)).toEqual([...ids].reverse());
      expect(page[0]).toEqual({
        id: expect.any(Number),
        source: "model",
        reason: "moderation was unavailable (the model server failed)",
        createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
        message: { id: ids[2], channelId: r.channelId, userId: sender.user.id, content: contents[2] },
      });
      expect(page[1]).toMatchObject({ source: "model", reason: "insults another member", message: { id: ids[1], content: contents[1] } });
      expect(page[2]).toMatchObject({ source: "words", reason: 'contains the listed word "darn"', message: { id: ids[0], channelId: r.channelId, userId: sender.user.id, deleted: true } });
      expect(page[2].message.content).toBeUndefined();

      const first = await expectStatus(await api("GET", "/api/admin/flags?limit=1", admin.token), 200);
      expect(first).toEqual([page[0]]);
      const next = await expectStatus(await api("GET", `/api/admin/flags?limit=2&before=${first[0].id}`, admin.token), 200);
      expect(next).toEqual(page.slice(1));

      await expectError(await api("GET", "/api/admin/flags", sender.token), 403, "FORBIDDEN");
      await expectError(await api("GET", "/api/admin/flags", undefined), 401, "UNAUTHORIZED");
      await expectError(await api("GET", "/api/admin/flags?limit=0", moderator.token), 400, "VALIDATION_FAILED", "limit");
      // The audit trail stays admins only.
      await expectError(await api("GET", "/api/admin/audit", moderator.token), 403, "FORBIDDEN");
      await expectStatus(await api("GET", "/api/admin/audit?action=message_flagged&limit=1", admin.token), 200);
    } finally {
      r.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// Order with moderation on

describe("per-channel order with the model checking concurrently", () => {
  test("a slow check holds later messages of its channel: ids and delivery follow acceptance, not the model's answer order", async () => {
    const r = await room(server("block", "open"));
    const other = await r.api("POST", `/api/channels/${r.channelId}/join`, moderator.token);
    await expectStatus(other, 200);
    const second = await server("block", "open").connect(moderator.token);
    try {
      const slowText = `[fenced] slow-ish ${crypto.randomUUID()}`;
      let slowPending = false;
      let slowPendingWhenFastAsked: boolean | undefined;
      fake.answer(async (request) => {
        if (request.prompt === slowText) {
          slowPending = true;
          await Bun.sleep(300);
          slowPending = false;
          return { reply: '{"allowed": true, "reason": "ok"}' };
        }
        if (request.prompt.includes("] fast ")) slowPendingWhenFastAsked = slowPending;
        return answers.allow;
      });
      const first = sendWithAck(r.from, { content: slowText, channelId: r.channelId });
      await until(() => fake.requests.some((q) => q.prompt === slowText), "the first check started");
      const fastText = `[allow] fast ${crypto.randomUUID()}`;
      const fast = sendWithAck(second, { content: fastText, channelId: r.channelId });
      const [a, b] = await Promise.all([first, fast]);
      expect(a.ok && b.ok).toBe(true);
      expect(b.message.id).toBeGreaterThan(a.message.id);
      // The second check ran while the first was still waiting for the model.
      expect(slowPendingWhenFastAsked).toBe(true);
      expect(fake.maxInFlight).toBeGreaterThan(1);
      const heard = await r.heard.until(([e, m]) => e === "message" && (m as Json).content === fastText);
      expect(heard.filter(([e]) => e === "message").map(([, m]) => (m as Json).content)).toEqual([slowText, fastText]);
    } finally {
      fake.answer(script);
      second.disconnect();
      r.close();
    }
  });

  test("several senders, random model delays, some refusals: every receiver gets the allowed messages in increasing id order, each sender's in its sending order", async () => {
    // A server of its own with a model timeout far above the checks' queueing: 48 checks of up to
    // 120 ms share the moderation slots, and with the others' 500 ms (slot wait included) a loaded
    // machine timed one out, failing it open (a refused message stored). Order is the subject here.
    const t = await startTestServer({ database: base.database, env: { ...envFor("block", "closed"), LLM_TIMEOUT_MS: "15000" } });
    const api = apiFor(t);
    const senders: Registered[] = await Promise.all(Array.from({ length: 4 }, () => t.register()));
    const channel = await expectStatus(await api("POST", "/api/channels", senders[0]!.token, { name: uniqueName("order"), kind: "public" }), 201);
    for (const s of senders.slice(1)) await expectStatus(await api("POST", `/api/channels/${channel.id}/join`, s.token), 200);
    const sockets = await Promise.all(senders.map((s) => t.connect(s.token)));
    try {
      const recorders = sockets.map(record);
      const perSender = 12;
      const sends = sockets.flatMap((socket, s) =>
        Array.from({ length: perSender }, (_, i) => {
          const refused = (s + i) % 4 === 0;
          const content = `[${refused ? "randr" : "rand"}] s${s} #${i}`;
          return { s, i, refused, content, ack: sendWithAck(socket, { content, channelId: channel.id }, 15_000) };
        }),
      );
      const acks = await Promise.all(sends.map((x) => x.ack));
      for (const [k, ack] of acks.entries()) {
        if (sends[k]!.refused) expect(ack).toMatchObject({ ok: false, error: { code: "MESSAGE_REJECTED" } });
        else expect(ack.ok).toBe(true);
      }
      const allowed = sends.filter((x) => !x.refused);
      // Each sender's allowed messages got increasing ids in the order it sent them.
      for (let s = 0; s < sockets.length; s++) {
        const ids = allowed.filter((x) => x.s === s).map((x) => acks[sends.indexOf(x)].message.id as number);
        expect(ids).toEqual([...ids].sort((a, b) => a - b));
      }
      const stored = [...(await sql<Stored[]>`SELECT id, content FROM messages WHERE channel_id = ${channel.id} ORDER BY id`)];
      expect(stored.map((m) => m.content).sort()).toEqual(allowed.map((x) => x.content).sort());
      for (const rec of recorders) {
        await until(() => rec.events.filter(([e]) => e === "message").length >= allowed.length, "every allowed message delivered");
        const got = rec.events.filter(([e]) => e === "message").map(([, m]) => m as Json);
        expect(got.map((m) => m.id)).toEqual(stored.map((m) => m.id));
      }
      expect(randomChecks.most).toBeGreaterThan(1);
      expect(fake.maxInFlight).toBeGreaterThan(1);
    } finally {
      for (const socket of sockets) socket.disconnect();
    }
  });
});

describe("a resend with the same clientId (block mode)", () => {
  test("gets the stored message back without a second check, even when the model would now refuse it", async () => {
    const r = await room(server("block", "closed"));
    try {
      const clientId = crypto.randomUUID();
      const text = `resent ${crypto.randomUUID()}`;
      const first = await sendWithAck(r.from, { content: `[allow] ${text}`, channelId: r.channelId, clientId });
      expect(first.ok).toBe(true);
      // The first event of a new channel (api.md §11).
      expect(first.message.seq).toBe(1);
      const calls = modelCalls(`[allow] ${text}`);
      // The same clientId with text the model refuses: the first message comes back (as history shows it:
      // no seq, api.md §11), nothing is asked.
      const again = await sendWithAck(r.from, { content: `[refuse] ${text}`, channelId: r.channelId, clientId });
      expect(again).toEqual({ ok: true, message: asHistory(first.message) });
      expect([modelCalls(`[allow] ${text}`), modelCalls(`[refuse] ${text}`)]).toEqual([calls, 0]);
      expect(await storedWith(`[refuse] ${text}`)).toEqual([]);
    } finally {
      r.close();
    }
  });
});
