import { expect } from "bun:test";
import type { ChatMessage } from "../../src/messages/messages.schemas.ts";
import type { Json, Registered } from "./server.ts";

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

/**
 * `postIn(user, channelId, content?, clientId?)` against one server: POST /api/messages by `user`
 * (api.md §4), expecting 201 and the message asked for (its channel, content and author); returns it
 * as the server answered. `channelId` undefined leaves the field out (general); `clientId` likewise.
 */
export function messagePoster(server: { url: string }) {
  const api = apiFor(server);
  return async (user: Registered, channelId: number | undefined, content = `m ${crypto.randomUUID()}`, clientId?: string): Promise<ChatMessage> => {
    const body = { content, ...(channelId === undefined ? {} : { channelId }), ...(clientId === undefined ? {} : { clientId }) };
    const message: ChatMessage = await expectStatus(await api("POST", "/api/messages", user.token, body), 201);
    expect(message).toMatchObject({ channelId: channelId ?? 1 /* general */, content, userId: user.user.id });
    return message;
  };
}
