import OpenAI from "openai";
import pLimit from "p-limit";
import { jsonrepair } from "jsonrepair";
import type { z } from "zod";
import type { Config } from "../config.ts";

/**
 * The one way the service talks to a model (api.md §10): any server that speaks OpenAI's
 * chat-completions protocol (llama.cpp, vLLM, Ollama, hosted APIs), through the official client
 * pointed at LLM_BASE_URL. It brings the per-request timeout and the retries with backoff; on top:
 * - one deadline per call, LLM_TIMEOUT_MS, covering the wait for a free slot and every retry, so a
 *   slow or dead model costs a caller a bounded wait;
 * - at most `slots` calls of this client in flight; each purpose has a client, and so slots, of its
 *   own (LLM_MAX_CONCURRENCY for summaries, LLM_MODERATION_CONCURRENCY for moderation), so a check in
 *   the write path never queues behind a summary;
 * - `completeJson`: the answer parsed as JSON even when the model wraps it in prose or code fences
 *   or leaves it slightly broken (jsonrepair), then checked against a zod schema.
 */
export interface LlmClient {
  readonly model: string;
  /** The assistant's text for `messages`. Throws LlmFailure on timeout, error or an empty answer. */
  complete(messages: LlmMessage[], options?: { maxTokens?: number }): Promise<string>;
  /** The assistant's answer as `schema` (throws LlmFailure when none can be read from it). */
  completeJson<T>(messages: LlmMessage[], schema: z.ZodType<T>, options?: { maxTokens?: number }): Promise<T>;
}

export interface LlmMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** The model did not give a usable answer in time: timed out, failed, or answered something unreadable. */
export class LlmFailure extends Error {
  constructor(
    readonly kind: "timeout" | "error" | "unreadable",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "LlmFailure";
  }
}

type LlmConfig = Pick<Config, "LLM_BASE_URL" | "LLM_API_KEY" | "LLM_MODEL" | "LLM_TIMEOUT_MS" | "LLM_MAX_RETRIES">;

/** A client with `slots` calls in flight at most, or undefined when no LLM_BASE_URL is configured (the LLM features are then off). */
export function createLlmClient(config: LlmConfig, slots: number): LlmClient | undefined {
  if (!config.LLM_BASE_URL || !config.LLM_MODEL) return undefined;
  const model = config.LLM_MODEL;
  const openai = new OpenAI({
    baseURL: config.LLM_BASE_URL,
    // Local servers take any key; the client insists on one.
    apiKey: config.LLM_API_KEY ?? "none",
    timeout: config.LLM_TIMEOUT_MS,
    maxRetries: config.LLM_MAX_RETRIES,
  });
  const limit = pLimit(slots);

  async function complete(messages: LlmMessage[], { maxTokens }: { maxTokens?: number } = {}): Promise<string> {
    const deadline = AbortSignal.timeout(config.LLM_TIMEOUT_MS);
    const call = limit(async () => {
      // Its deadline passed while it waited for a slot: no point in asking.
      deadline.throwIfAborted();
      const completion = await openai.chat.completions.create({ model, messages, temperature: 0, max_tokens: maxTokens }, { signal: deadline });
      return completion.choices[0]?.message?.content ?? "";
    });
    // The deadline is ours: the SDK notices its signal only between attempts, so with retries a call
    // could outlive it by one backoff sleep (openai 6.x). What it does after is not waited for.
    const expired = new Promise<never>((_, reject) => deadline.addEventListener("abort", () => reject(deadline.reason), { once: true }));
    call.catch(() => undefined);
    expired.catch(() => undefined);
    let text: string;
    try {
      text = await Promise.race([call, expired]);
    } catch (error) {
      if (deadline.aborted || error instanceof OpenAI.APIConnectionTimeoutError) {
        throw new LlmFailure("timeout", `the model did not answer within ${config.LLM_TIMEOUT_MS} ms`, { cause: error });
      }
      throw new LlmFailure("error", `the model server failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    if (text.trim() === "") throw new LlmFailure("unreadable", "the model gave an empty answer");
    return text;
  }

  return {
    model,
    complete,
    async completeJson(messages, schema, options) {
      const text = await complete(messages, options);
      const parsed = schema.safeParse(readJson(text));
      if (!parsed.success) throw new LlmFailure("unreadable", `the model's answer is not the expected JSON: ${text.slice(0, 200)}`);
      return parsed.data;
    },
  };
}

/** The first JSON object in `text` (prose and code fences around it ignored, small breakage repaired), or undefined. */
export function readJson(text: string): unknown {
  const start = text.indexOf("{");
  const end = text.lastIndexOf("}");
  if (start < 0 || end < start) return undefined;
  const candidate = text.slice(start, end + 1);
  try {
    return JSON.parse(jsonrepair(candidate));
  } catch {
    return undefined;
  }
}
