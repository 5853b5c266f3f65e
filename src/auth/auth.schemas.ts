import { z } from "@hono/zod-openapi";
import { atMostUnits, codePoints, storableText, storableTextMessage } from "../lib/schemas.ts";
import { newUsernameSchema, userSchema, usernameSchema } from "../users/users.schemas.ts";

/** Any password as typed: bounded before the work of normalising, then NFC so the same password typed on any keyboard matches. */
const nfcPassword = () =>
  z
    .string()
    .refine(atMostUnits(1024), "must be at most 128 characters")
    .transform((s) => s.normalize("NFC"));
const between = (min: number) => z.string().refine((s) => codePoints(s) >= min && codePoints(s) <= 128, `must be ${min} to 128 characters`);
const passwordDoc = (min: number) => ({ type: "string", minLength: min, maxLength: 128, format: "password" }) as const;

/** api.md §1: 8–128 characters of storable text. */
export const passwordSchema = nfcPassword()
  .pipe(between(8).refine(storableText, storableTextMessage))
  .openapi(passwordDoc(8));

/**
 * A password offered to be checked (a login, the current password of a change): any 1–128
 * characters. A wrong one is answered INVALID_CREDENTIALS whatever it looks like, so a short or
 * odd guess learns nothing of the policy and is counted as a failed login like any other.
 */
export const offeredPasswordSchema = nfcPassword().pipe(between(1)).openapi(passwordDoc(1));

/** A login: any name an account may have, including one registered before today's rules. */
export const credentialsSchema = z
  .object({ username: usernameSchema, password: offeredPasswordSchema })
  .openapi("Credentials");

export type Credentials = z.output<typeof credentialsSchema>;

/** A registration: the name must also pass the rules for new names (api.md §7 "Names"). */
export const registrationSchema = z
  .object({ username: newUsernameSchema, password: passwordSchema })
  .openapi("Registration");

/** POST /api/auth/password: the new password under the same policy as at registration. */
export const passwordChangeSchema = z
  .object({ currentPassword: offeredPasswordSchema, newPassword: passwordSchema })
  .refine((body) => body.newPassword !== body.currentPassword, {
    path: ["newPassword"],
    message: "must differ from currentPassword",
    // Only once both are valid passwords: a short one already has its own message.
    when: (payload) => payload.issues.length === 0,
  })
  .openapi("PasswordChange");

export type PasswordChange = z.output<typeof passwordChangeSchema>;

export const authResultSchema = z
  .object({
    token: z.string().openapi({ description: "HS256 JWT access token" }),
    refreshToken: z.string().openapi({ description: "opaque, long-lived; stored server-side only as a hash" }),
    user: userSchema,
  })
  .openapi("AuthResult");

/** An opaque refresh token as issued: base64url, 43 characters for 256 bits. */
export const refreshBodySchema = z
  .object({ refreshToken: z.string({ error: "must be a string" }).regex(/^[A-Za-z0-9_-]{16,128}$/, "is not a refresh token") })
  .openapi("RefreshRequest");

export const tokenPairSchema = z
  .object({ token: z.string(), refreshToken: z.string() })
  .openapi("TokenPair");
