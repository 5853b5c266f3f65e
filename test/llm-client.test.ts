import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { z } from "zod";
import { loadConfig } from "../src/config.ts";
import { createLlmClient, LlmFailure, readJson, type LlmClient } from "../src/llm/llm-client.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { startFakeLlm, type FakeAnswer } from "./helpers/fake-llm.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 8, item 1: the chat-completions client against a scripted OpenAI-compatible server: one
// deadline per call (its retries and its wait for a slot included), bounded retries, bounded
// concurrency, and answers read as JSON even when the model wraps them in prose.

const fake = startFakeLlm();
const timeoutMs = 400;

function client(overrides: Record<string, string> = {}): LlmClient {
  const config = loadConfig({
    NODE_ENV: "test",
    DATABASE_URL: "postgresql://unused@127.0.0.1/none",
    JWT_SECRET: "x".repeat(32),
    LLM_BASE_URL: fake.baseUrl,
    LLM_MODEL: "test-model",
    LLM_TIMEOUT_MS: String(timeoutMs),
    ...overrides,
  });
  const llm = createLlmClient(config, config.LLM_MAX_CONCURRENCY);
  if (!llm) throw new Error("no client");
  return llm;
}

const ask = [{ role: "user" as const, content: "hello" }];
const verdict = z.object({ allowed: z.boolean(), reason: z.string() });

/** The LlmFailure a call ends with (fails the test if it succeeds). */
async function failure(call: Promise<unknown>): Promise<LlmFailure> {
  const error = await call.then(
    (value) => new Error(`succeeded with ${JSON.stringify(value)}`),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(LlmFailure);
  return error as LlmFailure;
}

test("without LLM_BASE_URL there is no client; LLM_BASE_URL without LLM_MODEL is a configuration error", () => {
  const base = { NODE_ENV: "test", DATABASE_URL: "postgresql://u@h/d", JWT_SECRET: "x".repeat(32) };
  expect(createLlmClient(loadConfig(base), 8)).toBeUndefined();
  expect(() => loadConfig({ ...base, LLM_BASE_URL: fake.baseUrl })).toThrow(/LLM_MODEL/);
  expect(() => loadConfig({ ...base, LLM_BASE_URL: "ftp://x", LLM_MODEL: "m" })).toThrow(/LLM_BASE_URL/);
});

describe("a plain completion", () => {
  test("sends the model, the messages and the key; returns the assistant's text", async () => {
    fake.answer(() => ({ reply: "hi there" }));
    const before = fake.requests.length;
    expect(await client({ LLM_API_KEY: "sk-test" }).complete(ask)).toBe("hi there");
    const request = fake.requests[before]!;
    expect(request).toMatchObject({ model: "test-model", messages: ask, authorization: "Bearer sk-test" });
  });

  test("an empty answer is unreadable", async () => {
    fake.answer(() => ({ reply: "   " }));
    expect((await failure(client().complete(ask))).kind).toBe("unreadable");
  });
});

describe("failures: every one an LlmFailure within the deadline, never a hang", () => {
  const cases: [string, FakeAnswer, LlmFailure["kind"]][] = [
    ["HTTP 500", { status: 500 }, "error"],
    ["HTTP 503", { status: 503 }, "error"],
    ["HTTP 400", { status: 400 }, "error"],
    ["a body that is not JSON", { malformed: true }, "error"],
    ["an answer past the timeout", { reply: "late", delayMs: timeoutMs * 3 }, "timeout"],
  ];
  // Without retries: a failure retried until the deadline would end as a timeout (see "retries").
  test.each(cases)("%s → %p", async (_label, answer, kind) => {
    fake.answer(() => answer);
    const started = performance.now();
    const error = await failure(client({ LLM_MAX_RETRIES: "0" }).complete(ask));
    expect(error.kind).toBe(kind);
    expect(performance.now() - started).toBeLessThan(timeoutMs + 300);
  });

  test("a server that refuses connections → error at once without retries; with retries, still within the deadline", async () => {
    const refused = { LLM_BASE_URL: "http://127.0.0.1:1/v1" };
    let started = performance.now();
    expect((await failure(client({ ...refused, LLM_MAX_RETRIES: "0" }).complete(ask))).kind).toBe("error");
    expect(performance.now() - started).toBeLessThan(200);
    started = performance.now();
    await failure(client({ ...refused, LLM_MAX_RETRIES: "5" }).complete(ask));
    expect(performance.now() - started).toBeLessThan(timeoutMs + 300);
  });
});

describe("retries", () => {
  test("a 500 is retried LLM_MAX_RETRIES times, then fails; a success on a retry is returned", async () => {
    let calls = 0;
    fake.answer(() => (++calls <= 2 ? { status: 500 } : { reply: "third time" }));
    expect((await failure(client({ LLM_MAX_RETRIES: "1", LLM_TIMEOUT_MS: "3000" }).complete(ask))).kind).toBe("error");
    expect(calls).toBe(2); // the call and one retry
    calls = 0;
    expect(await client({ LLM_MAX_RETRIES: "2", LLM_TIMEOUT_MS: "5000" }).complete(ask)).toBe("third time");
    expect(calls).toBe(3);
  });

  test("retries stay inside the one deadline", async () => {
    fake.answer(() => ({ status: 500, delayMs: 150 }));
    const started = performance.now();
    await failure(client({ LLM_MAX_RETRIES: "5", LLM_TIMEOUT_MS: "400" }).complete(ask));
    expect(performance.now() - started).toBeLessThan(700);
  });
});

describe("concurrency", () => {
  test("at most its slots (here LLM_MAX_CONCURRENCY) calls in flight; the others wait their turn and all are answered", async () => {
    let inFlight = 0;
    let most = 0;
    fake.answer(async () => {
      most = Math.max(most, ++inFlight);
      await Bun.sleep(40);
      inFlight--;
      return { reply: "done" };
    });
    const llm = client({ LLM_MAX_CONCURRENCY: "3", LLM_TIMEOUT_MS: "5000" });
    const answers = await Promise.all(Array.from({ length: 12 }, () => llm.complete(ask)));
    expect(answers).toEqual(Array.from({ length: 12 }, () => "done"));
    expect(most).toBe(3);
  });

  test("the wait for a slot counts against the call's deadline", async () => {
    fake.answer(() => ({ reply: "slow", delayMs: 300 }));
    const llm = client({ LLM_MAX_CONCURRENCY: "1", LLM_TIMEOUT_MS: "400" });
    const started = performance.now();
    const [first, second] = await Promise.allSettled([llm.complete(ask), llm.complete(ask)]);
    expect(first.status).toBe("fulfilled");
    // Queued 300 ms behind the first, it had 100 ms left: a timeout at ~400 ms, not at ~700.
    expect(second.status === "rejected" && (second.reason as LlmFailure).kind).toBe("timeout");
    expect(performance.now() - started).toBeLessThan(600);
  });
});

describe("structured answers", () => {
  const answers: [string, string, unknown][] = [
    ["bare JSON", '{"allowed": false, "reason": "insult"}', { allowed: false, reason: "insult" }],
    ["in prose", 'Sure! Here is my verdict: {"allowed": true, "reason": "fine"} Hope that helps.', { allowed: true, reason: "fine" }],
    ["in a code fence", '```json\n{"allowed": false, "reason": "spam"}\n```', { allowed: false, reason: "spam" }],
    ["single quotes and a trailing comma", "{'allowed': false, 'reason': 'threat',}", { allowed: false, reason: "threat" }],
  ];
  test.each(answers)("%s → parsed", async (_label, reply, expected) => {
    fake.answer(() => ({ reply }));
    expect(await client().completeJson(ask, verdict)).toEqual(expected as z.infer<typeof verdict>);
  });

  const unreadable: [string, string][] = [
    ["prose with no JSON", "This message looks perfectly fine to me."],
    ["JSON of the wrong shape", '{"verdict": "ok"}'],
    ["a wrong type", '{"allowed": "maybe", "reason": 3}'],
    ["hopelessly broken JSON", "{ allowed: : ] }"],
  ];
  test.each(unreadable)("%s → unreadable", async (_label, reply) => {
    fake.answer(() => ({ reply }));
    expect((await failure(client().completeJson(ask, verdict))).kind).toBe("unreadable");
  });

  test("readJson takes the outermost object and returns undefined when there is none", () => {
    expect(readJson('x {"a": {"b": 1}} y')).toEqual({ a: { b: 1 } });
    expect(readJson("no braces")).toBeUndefined();
    expect(readJson("} {")).toBeUndefined();
  });
});
