import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { errorSchema } from "./schemas.ts";

/** OpenAPI response entries, so each route lists every status it can answer with. */
export const jsonContent = <T>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});

export const errorResponse = (description: string) => jsonContent(errorSchema, description);

export const jsonBody = <T>(schema: T) => ({
  content: { "application/json": { schema } },
  required: true,
});

/** A JSON body that may be left out entirely (validated when sent). */
export const optionalJsonBody = <T>(schema: T) => ({
  content: { "application/json": { schema } },
  required: false,
});

export const protectedResponses = {
  401: errorResponse("Missing, malformed or expired token (UNAUTHORIZED)"),
};

export const validationResponses = {
  400: errorResponse("BAD_JSON or VALIDATION_FAILED, with details"),
};

const serialized = new WeakMap<object, string>();

/**
 * `c.json(value, status)`, serializing each `value` object once: the caches that answer the
 * hottest reads (src/messages/recent-messages.ts, the user list) hand out the same page object
 * until it changes, and stringifying a page of messages costs more than the rest of such a
 * request. Only for values nobody mutates after handing them out.
 */
export function jsonOnce<T extends object, S extends ContentfulStatusCode>(c: Context, value: T, status: S) {
  let text = serialized.get(value);
  if (text === undefined) serialized.set(value, (text = JSON.stringify(value)));
  return c.body(text, status, { "Content-Type": "application/json" }) as unknown as ReturnType<typeof c.json<T, S>>;
}
