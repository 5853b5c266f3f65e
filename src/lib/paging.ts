import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { jsonContent } from "./responses.ts";
import { idParam, limitParam } from "./schemas.ts";

/**
 * Lists read by id a page at a time (api.md §2's `GET /api/users`, and the channel directory and
 * member lists of §8): `?limit=` 1–1000 (default 100) and `?after=<id>`, and while more remain a
 * `Link: <path?after=N&limit=L>; rel="next"` header, N being the page's last id.
 */

/** The query of such a list; `what` names its entries in the `after` parameter's description. */
export function idPageQuerySchema(what: string) {
  return z.object({
    limit: limitParam(1, 1000, 100),
    after: idParam.optional().openapi({ type: "integer", description: `return ${what} with a larger id` }),
  });
}

/** One page: its entries, and the `after` of the next page when more remain. */
export type IdPage<T> = { items: T[]; nextAfter?: number };

/** Of up to `limit + 1` rows read in id order, the first `limit` and, when there was one more, the next page's `after`. */
export function pageOf<T>(rows: T[], limit: number, idOf: (row: T) => number): { rows: T[]; nextAfter?: number } {
  const page = rows.slice(0, limit);
  return { rows: page, nextAfter: rows.length > limit && page.length > 0 ? idOf(page.at(-1)!) : undefined };
}

/** The `Link` header of the next page, when there is one. `path` is the list's own (no query). */
export function setNextLink(c: Context, path: string, nextAfter: number | undefined, limit: number): void {
  if (nextAfter !== undefined) c.header("Link", `<${path}?after=${nextAfter}&limit=${limit}>; rel="next"`);
}

/** The OpenAPI 200 response of such a list: `schema` (an array), with its optional `Link` header. `path` as documented. */
export function idPageResponse<T>(schema: T, description: string, path: string) {
  return {
    ...jsonContent(schema, description),
    headers: z.object({
      Link: z.string().optional().openapi({ description: `Present when more remain: \`<${path}?after=N&limit=L>; rel="next"\`` }),
    }),
  };
}
