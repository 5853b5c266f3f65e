import { afterAll } from "bun:test";

/**
 * A local server that speaks OpenAI's chat-completions protocol (POST /v1/chat/completions) and
 * answers from a script, since no model server is reachable from the test machines (issue 8).
 * Each request is answered by `script(request)`:
 * - `{ reply: "text" }`: a normal completion whose message content is the text (JSON or prose);
 * - `{ reply, delayMs }`: the same, after a delay (past the service's LLM_TIMEOUT_MS, for timeouts);
 * - `{ status: 500 }`: an HTTP error with an OpenAI-style error body;
 * - `{ malformed: true }`: a 200 whose body is not JSON at all.
 */
export type FakeAnswer = { reply: string; delayMs?: number } | { status: number; delayMs?: number } | { malformed: true; delayMs?: number };

export interface FakeLlmRequest {
  model: string;
  messages: { role: string; content: string }[];
  /** The last message's content: what the service asks about. */
  prompt: string;
  authorization: string | null;
}

export interface FakeLlm {
  /** For LLM_BASE_URL. */
  baseUrl: string;
  /** Every request received, in order. */
  requests: FakeLlmRequest[];
  /** Replaces the script. */
  answer(script: (request: FakeLlmRequest) => FakeAnswer | Promise<FakeAnswer>): void;
  /** Requests being answered right now, and the most at once so far. */
  readonly inFlight: number;
  readonly maxInFlight: number;
  stop(): void;
}

export function startFakeLlm(script: (request: FakeLlmRequest) => FakeAnswer | Promise<FakeAnswer> = () => ({ reply: "ok" })): FakeLlm {
  let current = script;
  let inFlight = 0;
  let maxInFlight = 0;
  const requests: FakeLlmRequest[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const url = new URL(req.url);
      if (req.method !== "POST" || url.pathname !== "/v1/chat/completions") return new Response("not found", { status: 404 });
      const body = (await req.json()) as { model: string; messages: { role: string; content: string }[] };
      const request: FakeLlmRequest = {
        model: body.model,
        messages: body.messages,
        prompt: body.messages.at(-1)?.content ?? "",
        authorization: req.headers.get("authorization"),
      };
      requests.push(request);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        const answer = await current(request);
        if (answer.delayMs) await Bun.sleep(answer.delayMs);
        if ("malformed" in answer) return new Response("<html>502 Bad Gateway</html> {not json", { headers: { "content-type": "application/json" } });
        if ("status" in answer) return Response.json({ error: { message: "scripted failure", type: "server_error" } }, { status: answer.status });
        return Response.json({
          id: `chatcmpl-${requests.length}`,
          object: "chat.completion",
          created: Math.floor(Date.now() / 1000),
          model: body.model,
          choices: [{ index: 0, message: { role: "assistant", content: answer.reply }, finish_reason: "stop" }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        });
      } finally {
        inFlight--;
      }
    },
  });
  const fake: FakeLlm = {
    baseUrl: `http://127.0.0.1:${server.port}/v1`,
    requests,
    answer(next) {
      current = next;
    },
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    stop() {
      server.stop(true);
    },
  };
  afterAll(() => fake.stop());
  return fake;
}
