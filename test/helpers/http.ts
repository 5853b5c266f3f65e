import { expect } from "bun:test";
import type { Json } from "./server.ts";

/** A body sent as is (for BAD_JSON rows). */
export class Raw {
  constructor(readonly text: string) {}
}

/**
 * `api(method, path, token?, body?)` against one server: a bearer token when given, and a JSON
 * body (or a `Raw` one, sent as is) with its content type.
 */
export function apiFor(server: { url: string }) {
  return (method: string, path: string, token: string | undefined, body?: unknown): Promise<Response> => {
    const headers: Record<string, string> = {};
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      payload = body instanceof Raw ? body.text : JSON.stringify(body);
    }
    return fetch(`${server.url}${path}`, { method, headers, body: payload });
  };
}

/** Asserts the status (showing the body when it is wrong) and returns the parsed body, if any. */
export async function expectStatus(res: Response, status: number): Promise<Json> {
  const text = await res.text();
  expect({ status: res.status, text }).toMatchObject({ status });
  if (status === 204) expect(text).toBe("");
  return text === "" ? undefined : JSON.parse(text);
}
