import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createLogger } from "../src/lib/logger.ts";
import { MODERATION_SYSTEM_PROMPT } from "../src/moderation/moderation.service.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { expectError } from "./helpers/expect-error.ts";
import { startFakeLlm, type FakeAnswer, type FakeLlmRequest } from "./helpers/fake-llm.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { until } from "./helpers/locks.ts";
import { record } from "./helpers/recorder.ts";
import { sendWithAck, startTestServer, uniqueName, type Json, type Registered } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 15, finding 3: moderation could be flooded open. Summaries had no limit and shared the one
// LLM_MAX_CONCURRENCY pool with moderation, and MODERATION_FAIL defaulted to open, so with summaries
// holding every slot a message the model refuses waited out LLM_TIMEOUT_MS and was delivered. Now
// moderation has slots of its own (LLM_MODERATION_CONCURRENCY), summaries are limited per user
// (RATE_LIMIT_SUMMARIES), and an unset MODERATION_FAIL means closed. The model is a scripted fake
// that holds every summary call until the test lets them go.

const isModeration = (request: FakeLlmRequest) => request.messages[0]?.content === MODERATION_SYSTEM_PROMPT;

/** Summary calls the fake is holding, and the gate that lets them answer. */
const held = { now: 0 };
let openGate!: () => void;
const gate = new Promise<void>((resolve) => (openGate = resolve));

const verdicts: Record<string, FakeAnswer> = {
  refuse: { reply: '{"allowed": false, "reason": "insults another member"}' },
  allow: { reply: '{"allowed": true, "reason": "harmless"}' },
  http500: { status: 500 },
  prose: { reply: "Looks fine to me." },
  slow: { reply: '{"allowed": true, "reason": "late"}', delayMs: 1_500 },
  malformed: { malformed: true },
};

const fake = startFakeLlm(async (request) => {
  if (isModeration(request)) return verdicts[/\[(\w+)\]/.exec(request.prompt)?.[1] ?? "allow"] ?? verdicts.allow!;
  held.now++;
  await gate;
  held.now--;
  return { reply: "a summary" };
});

const TIMEOUT_MS = 8_000;
const SUMMARY_LIMIT = 15;
const FLOODERS = 2;
// MODERATION_FAIL unset: the default policy is part of what is tested. LLM_MAX_CONCURRENCY is the default 8.
const flooded = await startTestServer({
  env: {
    MODERATION: "block",
    LLM_BASE_URL: fake.baseUrl,
    LLM_MODEL: "test-model",
    LLM_TIMEOUT_MS: String(TIMEOUT_MS),
    LLM_MAX_RETRIES: "0",
    RATE_LIMIT_SUMMARIES: `${SUMMARY_LIMIT}/1m`,
  },
});
const api = apiFor(flooded);
const { sql } = flooded.database;

const storedWith = async (content: string) => [...(await sql<{ id: number }[]>`SELECT id FROM messages WHERE content = ${content}`)];

describe("moderation with summaries flooding the model", () => {
  test("30 summaries hold every summary slot: a refused message is still refused at once, by the model, and a user past RATE_LIMIT_SUMMARIES gets 429", async () => {
    const [sender, ...flooders] = await Promise.all(Array.from({ length: 1 + FLOODERS }, () => flooded.register()));
    const channel = await expectStatus(await api("POST", "/api/channels", sender!.token, { name: uniqueName("flood"), kind: "public" }), 201);
    for (const user of flooders) await expectStatus(await api("POST", `/api/channels/${channel.id}/join`, user.token), 200);
    const ranges = FLOODERS * (SUMMARY_LIMIT + 1);
    await Promise.all(
      Array.from({ length: ranges + 1 }, async (_, i) => expectStatus(await api("POST", "/api/messages", sender!.token, { content: `[allow] history ${i}`, channelId: channel.id }), 201)),
    );
    // The sender's second socket listens.
    const [from, to] = await Promise.all([flooded.connect(sender!.token), flooded.connect(sender!.token)]);
    const heard = record(to);
    try {
      // A bystander baseline before the flood: the same refusal, nothing else running.
      const baselineStarted = performance.now();
      const baseline = await sendWithAck(from, { content: `[refuse] baseline ${crypto.randomUUID()}`, channelId: channel.id });
      const baselineMs = performance.now() - baselineStarted;
      expect(baseline).toMatchObject({ ok: false, error: { code: "MESSAGE_REJECTED" } });

      // The flood: each flooder asks for SUMMARY_LIMIT + 1 distinct ranges at once (32 requests).
      const flood = flooders.flatMap((user, u) =>
        Array.from({ length: SUMMARY_LIMIT + 1 }, (_, i) => {
          const last = 1 + u * (SUMMARY_LIMIT + 1) + i;
          return api("GET", `/api/channels/${channel.id}/summary?last=${last}`, user.token).then(async (res) => ({ user: u, res, body: (await res.json()) as Json }));
        }),
      );
      const answered: Awaited<(typeof flood)[number]>[] = [];
      for (const request of flood) void request.then((done) => answered.push(done));
      // Every summary slot is held by a call the model has not answered.
      await until(() => held.now === 8, "8 summary calls held by the model (LLM_MAX_CONCURRENCY)");

      // While the flood runs: refused messages by socket and by REST at once, then an allowed one.
      const refusedBySocket = `[refuse] flooded socket ${crypto.randomUUID()}`;
      const refusedByRest = `[refuse] flooded rest ${crypto.randomUUID()}`;
      const timed = async <T>(call: Promise<T>): Promise<[T, number]> => {
        const started = performance.now();
        const result = await call;
        return [result, performance.now() - started];
      };
      const [[socketAck, socketMs], [rest, restMs]] = await Promise.all([
        timed(sendWithAck(from, { content: refusedBySocket, channelId: channel.id }, TIMEOUT_MS + 5_000)),
        timed(api("POST", "/api/messages", sender!.token, { content: refusedByRest, channelId: channel.id })),
      ]);
      const fence = `[allow] flooded fence ${crypto.randomUUID()}`;
      const fenceAck = await sendWithAck(from, { content: fence, channelId: channel.id }, TIMEOUT_MS + 5_000);

      // The model's own refusal (not the failure policy), as quickly as without the flood.
      expect(socketAck).toEqual({ ok: false, error: { code: "MESSAGE_REJECTED", message: "Message rejected by moderation: insults another member" } });
      expect((await expectError(rest, 422, "MESSAGE_REJECTED")).error.message).toBe("Message rejected by moderation: insults another member");
      expect(fenceAck.ok).toBe(true);
      // The flood was still running: every summary slot held by a call the model has not answered.
      expect(held.now).toBe(8);
      // Generous bounds (a loaded 2-core machine): far from LLM_TIMEOUT_MS, near the bystander baseline.
      for (const ms of [socketMs, restMs]) {
        expect(ms).toBeLessThan(TIMEOUT_MS / 4);
        expect(ms).toBeLessThan(baselineMs + 1_500);
      }
      // Never stored, never broadcast.
      expect(await storedWith(refusedBySocket)).toEqual([]);
      expect(await storedWith(refusedByRest)).toEqual([]);
      const messages = (await heard.until(([e, m]) => e === "message" && (m as Json).content === fence)).filter(([e]) => e === "message").map(([, m]) => (m as Json).content);
      expect(messages).toEqual([fence]);

      // The per-user limit: of each flooder's requests one is past it, and refused at once, without a slot.
      await until(() => answered.length >= FLOODERS, "the requests past the limit answered");
      const limited = answered.filter((a) => a.res.status === 429);
      expect(limited.map((a) => a.user).sort()).toEqual([0, 1]);
      for (const { res, body } of limited) {
        expect(body).toEqual({ error: { code: "RATE_LIMITED", message: "Too many summary requests; retry later", retryAfter: expect.any(Number) } });
        expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
        expect(Number(res.headers.get("retry-after"))).toBeLessThanOrEqual(60);
      }

      // Let the model answer: every summary within the limit completes (or, on a very slow machine, times out).
      openGate();
      await Promise.all(flood);
      const statuses = answered.filter((a) => a.res.status !== 429).map((a) => a.res.status);
      expect(statuses).toHaveLength(FLOODERS * SUMMARY_LIMIT);
      for (const status of statuses) expect([200, 503]).toContain(status);
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(8);
    } finally {
      openGate();
      from.disconnect();
      to.disconnect();
    }
  });
});

// ---------------------------------------------------------------------------------------
// The default failure policy: MODERATION_FAIL unset is closed, and the start-up line says so.

const lines: { server: string; level: number; msg: string; moderation?: string; failMode?: string }[] = [];
const capture = (server: string) => createLogger("info", { write: (line: string) => void lines.push({ server, ...JSON.parse(line) }) });
const quickEnv = { LLM_BASE_URL: fake.baseUrl, LLM_MODEL: "test-model", LLM_TIMEOUT_MS: "300", LLM_MAX_RETRIES: "0" };
const defaults = {
  block: await startTestServer({ database: flooded.database, env: { ...quickEnv, MODERATION: "block" }, logger: capture("block") }),
  flag: await startTestServer({ database: flooded.database, env: { ...quickEnv, MODERATION: "flag" }, logger: capture("flag") }),
};
await startTestServer({ database: flooded.database, env: { ...quickEnv, MODERATION: "block", MODERATION_FAIL: "open" }, logger: capture("block-open") });
await startTestServer({ database: flooded.database, env: { MODERATION: "block" }, logger: capture("words-only") });
// Users work on every server (one database, one JWT secret).
const author = await defaults.block.register();

describe("MODERATION_FAIL unset", () => {
  const failures: [answer: string, reason: string][] = [
    ["slow", "moderation was unavailable (the model did not answer in time)"],
    ["http500", "moderation was unavailable (the model server failed)"],
    ["malformed", "moderation was unavailable (the model server failed)"],
    ["prose", "moderation was unavailable (the model's answer could not be read)"],
  ];

  test.each(failures)("block: the model answering %s refuses the message (MESSAGE_REJECTED), nothing stored", async (answer, reason) => {
    const content = `[${answer}] unchecked ${crypto.randomUUID()}`;
    const body = await expectError(await apiFor(defaults.block)("POST", "/api/messages", author.token, { content }), 422, "MESSAGE_REJECTED");
    expect(body.error.message).toBe(`Message rejected by moderation: ${reason}`);
    expect(await storedWith(content)).toEqual([]);
  });

  test.each(failures)("flag: the model answering %s delivers the message and flags it", async (answer, reason) => {
    const content = `[${answer}] unchecked ${crypto.randomUUID()}`;
    const sent = await expectStatus(await apiFor(defaults.flag)("POST", "/api/messages", author.token, { content }), 201);
    const flags = async () => [...(await sql<{ source: string; reason: string }[]>`SELECT source, reason FROM moderation_flags WHERE message_id = ${sent.id}`)];
    await until(async () => (await flags()).length > 0, "the flag");
    expect(await flags()).toEqual([{ source: "model", reason }]);
  });

  test("the start-up line names the policy in force: closed unless set, a warning when block fails open", () => {
    const startup = (server: string) => lines.filter((l) => l.server === server && l.msg.startsWith("moderation: ")).map(({ level, msg, moderation, failMode }) => ({ level, msg, moderation, failMode }));
    const info = 30;
    const warn = 40;
    expect(startup("block")).toEqual([{ level: info, moderation: "block", failMode: "closed", msg: "moderation: block mode, fails closed: a message the model could not check is refused" }]);
    expect(startup("flag")).toEqual([{ level: info, moderation: "flag", failMode: "closed", msg: "moderation: flag mode, fails closed: a message the model could not check is delivered and flagged" }]);
    expect(startup("block-open")).toEqual([{ level: warn, moderation: "block", failMode: "open", msg: "moderation: block mode, fails open: a message the model could not check is delivered unchecked" }]);
    expect(startup("words-only")).toEqual([
      { level: info, moderation: "block", failMode: "closed", msg: "moderation: block mode, word list only (no LLM_BASE_URL, so no model failures to handle)" },
    ]);
  });
});
