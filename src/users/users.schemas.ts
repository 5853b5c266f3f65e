import { z } from "@hono/zod-openapi";
import { foldCase, invisibleCharacterProblem } from "../lib/names.ts";
import { idPageQuerySchema } from "../lib/paging.ts";
import { atLeastUnits, atMostUnits, codePoints, idParam, storableText, storableTextMessage } from "../lib/schemas.ts";

// Letters and digits may carry up to three combining marks each, which scripts such as
// Devanagari or Thai need for ordinary names (NFC composes the rest, e.g. Й); a mark
// cannot stand alone and cannot be stacked into "zalgo" text.
const usernameChars = /^(?:[\p{L}\p{N}]\p{M}{0,3}|[_.-])+$/u;

const usernameText = z
  .string()
  .refine(atMostUnits(512), "must be at most 32 characters")
  .transform((s) => s.trim().normalize("NFC"));
const usernameLength = (s: string) => codePoints(s) >= 3 && codePoints(s) <= 32;
const usernameCharsMessage = "may contain only letters (with their accents), digits, '_', '.' and '-'";

/**
 * api.md §1: trimmed, NFC, 3–32 Unicode letters, digits, `_`, `.`, `-`. What a login may name:
 * accounts registered before the rule on invisible characters (below) still sign in.
 */
export const usernameSchema = usernameText
  .pipe(z.string().refine(usernameLength, "must be 3 to 32 characters").refine((s) => usernameChars.test(s), usernameCharsMessage))
  .openapi({ type: "string", minLength: 3, maxLength: 32, example: "алиса" });

/**
 * A name to register: as above, and no invisible, filler or text-direction character (api.md §7
 * "Names"). U+034F, VS16 and the Hangul fillers pass the letter-and-mark rule, so it is checked
 * first, and its message names the character.
 */
export const newUsernameSchema = usernameText
  .pipe(
    z
      .string()
      .superRefine((s, ctx) => {
        const problem = invisibleCharacterProblem(s);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      })
      .refine(usernameLength, "must be 3 to 32 characters")
      .refine((s) => usernameChars.test(s), usernameCharsMessage),
  )
  .openapi({ type: "string", minLength: 3, maxLength: 32, example: "алиса" });

/** The key that makes usernames unique regardless of case ("Alice" is "alice"); see foldCase. */
export function usernameKey(username: string): string {
  return foldCase(username);
}

export const roleSchema = z.enum(["user", "moderator", "admin"]);

export const userSchema = z
  .object({
    id: z.number().int(),
    username: z.string(),
    role: roleSchema,
    createdAt: z.string().openapi({ format: "date-time" }),
  })
  .openapi("User");

export type PublicUser = z.infer<typeof userSchema>;

export const listUsersQuerySchema = idPageQuerySchema("users");

/** The public view of a user row: the password hash never leaves the server. */
export function toPublicUser(user: { id: number; username: string; role: PublicUser["role"]; createdAt: Date }): PublicUser {
  return { id: user.id, username: user.username, role: user.role, createdAt: user.createdAt.toISOString() };
}

export const userIdParamsSchema = z.object({
  id: idParam.openapi({ param: { name: "id", in: "path" }, type: "integer" }),
});

export const setRoleBodySchema = z.object({ role: roleSchema }).openapi("SetRole");

export const banBodySchema = z
  .object({
    reason: z
      .string({ error: "must be a string" })
      .trim()
      .refine(atLeastUnits(1), "must not be empty")
      .refine(atMostUnits(500), "must be at most 500 characters")
      // Stored in the audit trail's jsonb meta, which can hold neither (an INTERNAL otherwise).
      .refine(storableText, storableTextMessage)
      .openapi({ minLength: 1, maxLength: 500 })
      .optional(),
  })
  .openapi("Ban");
