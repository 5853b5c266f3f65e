import { z } from "@hono/zod-openapi";

/** Length in Unicode code points, so "Ёж" counts 2 and an astral letter counts 1. */
export const codePoints = (s: string): number => [...s].length;

/**
 * PostgreSQL text cannot hold U+0000, and an unpaired surrogate is not valid UTF-8:
 * either would fail an insert as an INTERNAL error (or, in a password, silently become
 * U+FFFD), so refuse them as bad input.
 */
export const storableText = (s: string): boolean => !s.includes("\u0000") && s.isWellFormed();
export const storableTextMessage = "must not contain NUL characters or unpaired surrogates";

/**
 * Length bounds for strings that come from a client, as refinements. zod's own `.min()`/`.max()`
 * run on any value with a `length`, one that already failed `z.string()` included (to report every
 * issue at once), and compare that `length` with a number; a JSON object whose `length` cannot be
 * made a number, `{"length": {"valueOf": null, "toString": null}}`, then throws a TypeError inside
 * zod: a 500 INTERNAL instead of VALIDATION_FAILED. A refinement runs only on a string. (The bounds
 * are not in the OpenAPI and AsyncAPI documents by themselves: state them with `.openapi()`/`.meta()`.)
 */
export const atMostUnits = (max: number) => (s: string) => s.length <= max;
export const atLeastUnits = (min: number) => (s: string) => s.length >= min;

/** The largest id a row can have (ids are PostgreSQL `integer`). */
export const MAX_ID = 2_147_483_647;

/**
 * A positive integer id taken from a query string or path. Strict on purpose: "1e3",
 * " 7" or "0x10" are refused rather than coerced into something the client did not mean.
 */
export const idParam = z
  .string()
  .regex(/^[1-9]\d{0,9}$/, "must be a positive integer")
  .transform(Number)
  .pipe(z.number().int().max(MAX_ID, "is too large"));

/** A cursor from a query string: 0 (the beginning) or a positive integer up to MAX_ID, as strict as `idParam`. */
export const cursorParam = z
  .string()
  .regex(/^(0|[1-9]\d{0,9})$/, "must be 0 or a positive integer")
  .transform(Number)
  .pipe(z.number().int().max(MAX_ID, "is too large"));

/** An integer query parameter within [min, max] with a default. */
export function limitParam(min: number, max: number, fallback: number) {
  return z
    .string()
    .regex(/^\d{1,10}$/, "must be an integer")
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`))
    .default(fallback)
    .openapi({ type: "integer", minimum: min, maximum: max, default: fallback });
}

/** The error shape of api.md §0. */
export const errorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: "VALIDATION_FAILED" }),
      message: z.string(),
      details: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    }),
  })
  .openapi("Error");
