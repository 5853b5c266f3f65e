import { expect } from "bun:test";
import { expectError } from "./expect-error.ts";

/**
 * A 429 in api.md §0's shape plus `retryAfter`: the `Retry-After` header is whole seconds, at
 * least 1 and at most `windowSeconds`, and `error.retryAfter` is the same number. Returns it.
 */
export async function expectRateLimited(res: Response, windowSeconds: number): Promise<number> {
  return expectRetryable(res, 429, "RATE_LIMITED", windowSeconds);
}

/** `status`/`code` in §0's shape with a `Retry-After` header and the same `error.retryAfter`. */
export async function expectRetryable(res: Response, status: number, code: string, maxSeconds: number): Promise<number> {
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`not JSON (${res.status}): ${text}`);
  }
  expect({ status: res.status, code: body?.error?.code, text }).toMatchObject({ status, code });
  const header = res.headers.get("retry-after");
  expect(header ?? "").toMatch(/^[1-9]\d*$/);
  const seconds = Number(header);
  expect(seconds).toBeLessThanOrEqual(maxSeconds);
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "retryAfter"]);
  expect(body.error.retryAfter).toBe(seconds);
  const { retryAfter: _, ...rest } = body.error;
  await expectError(new Response(JSON.stringify({ error: rest }), { status: res.status, headers: res.headers }), status, code);
  return seconds;
}

/** The value of one unlabelled (or exactly labelled) Prometheus series in a /metrics text. */
export function metricValue(text: string, series: string): number | undefined {
  const escaped = series.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const match = new RegExp(`^${escaped} (\\S+)$`, "m").exec(text);
  return match ? Number(match[1]) : undefined;
}
