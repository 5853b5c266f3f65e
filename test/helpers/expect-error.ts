import { expect } from "bun:test";

/** The error body of api.md §0: `{ error: { code, message, details? } }`. */
export type ErrorBody = { error: { code: string; message: string; details?: { path: string; message: string }[] } };

/** Request ids the middleware accepts as given: word characters, `-` and `=`, at most 255. */
export const saneRequestId = /^[\w\-=]{1,255}$/;

/**
 * Asserts api.md §0's one error shape and returns the parsed body `{ error }`: the status/code
 * pair, a JSON content type, a sane X-Request-Id, exactly `{ error: { code, message, details? } }`
 * with a non-empty message and `details` entries exactly `{ path, message }` strings, no stack
 * trace, source path or internal error text; with `path`, `details` must name that path.
 */
export async function expectError(res: Response, status: number, code: string, path?: string): Promise<ErrorBody> {
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`not JSON (${res.status}): ${text}`);
  }
  // `text` rides along so that a wrong status or code shows the whole body in the diff.
  expect({ status: res.status, code: body?.error?.code, text }).toMatchObject({ status, code });
  expect(res.headers.get("content-type") ?? "").toMatch(/^application\/json\b/);
  expect(res.headers.get("x-request-id") ?? "").toMatch(saneRequestId);
  expect(Object.keys(body)).toEqual(["error"]);
  const keys = Object.keys(body.error);
  expect(keys).toContain("code");
  expect(keys).toContain("message");
  for (const key of keys) expect(["code", "message", "details"]).toContain(key);
  expect(typeof body.error.message).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  if ("details" in body.error) {
    expect(Array.isArray(body.error.details)).toBe(true);
    for (const d of body.error.details) {
      expect(Object.keys(d).sort()).toEqual(["message", "path"]);
      expect(typeof d.path).toBe("string");
      expect(typeof d.message).toBe("string");
    }
  }
  if (path !== undefined) expect(body.error.details).toEqual(expect.arrayContaining([{ path, message: expect.any(String) }]));
  // No stack trace, source path, dependency path or internal error text anywhere in the body.
  expect(text).not.toMatch(/\bat \S+ \(|\.ts:\d+|\/work\/|node_modules|stack|Error:|Prisma/i);
  return body as ErrorBody;
}
