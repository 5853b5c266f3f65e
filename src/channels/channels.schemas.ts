import { z } from "@hono/zod-openapi";
import { codePointLabel, invisibleCharacterProblem, withoutEmojiJoiners } from "../lib/names.ts";
import { idPageQuerySchema } from "../lib/paging.ts";
import { atMostUnits, codePoints, idParam, MAX_ID, storableText, storableTextMessage } from "../lib/schemas.ts";

export const channelKindSchema = z.enum(["public", "private", "direct"]);

/** api.md §8: `{ id, name, kind, createdAt, unread }`, and §11's `seq`. */
export const channelSchema = z
  .object({
    id: z.number().int(),
    name: z.string(),
    kind: channelKindSchema,
    createdAt: z.string().openapi({ format: "date-time" }),
    unread: z.number().int().openapi({ description: "messages after the caller's read marker" }),
    seq: z.number().int().openapi({ description: "the newest event's number in the channel's log, 0 if none (api.md §11): a resume's `since`" }),
  })
  .openapi("Channel");

export type ChannelView = z.infer<typeof channelSchema>;

/** A public channel as the directory lists it (GET /api/channels/public), joined or not. */
export const publicChannelSchema = z
  .object({
    id: z.number().int(),
    name: z.string(),
    createdAt: z.string().openapi({ format: "date-time" }),
    members: z.number().int().openapi({ description: "how many users are members" }),
    joined: z.boolean().openapi({ description: "whether the caller is one of them" }),
  })
  .openapi("PublicChannel");

export type PublicChannelView = z.infer<typeof publicChannelSchema>;

/** `?limit=&after=` of the channel directory, as GET /api/users pages. */
export const publicChannelsQuerySchema = idPageQuerySchema("channels");

/** `?limit=&after=` of a channel's member list, as GET /api/users pages. */
export const channelMembersQuerySchema = idPageQuerySchema("members");

/**
 * Why a channel name is refused for a character that does not show, or changes what the name looks
 * like (api.md §7 "Names"): the rule for usernames, plus other format characters and line breaks,
 * which a name of any characters could otherwise hold. Emoji keep their VS16 and ZWJ.
 */
function channelNameCharacterProblem(name: string): string | undefined {
  const text = withoutEmojiJoiners(name);
  const invisible = invisibleCharacterProblem(text);
  if (invisible) return invisible;
  for (const char of text) {
    if (/\p{Cf}/u.test(char)) return `must not contain format characters (${codePointLabel(char)})`;
    if (/[\p{Zl}\p{Zp}]/u.test(char)) return `must not contain line or paragraph separators (${codePointLabel(char)})`;
  }
  return undefined;
}

/** Channel names: trimmed, NFC, 1–64 code points, no control, invisible or text-direction characters. */
export const channelNameSchema = z
  .string({ error: "must be a string" })
  .refine(atMostUnits(1024), "must be at most 64 characters")
  .transform((s) => s.trim().normalize("NFC"))
  .pipe(
    z
      .string()
      .refine((s) => codePoints(s) >= 1 && codePoints(s) <= 64, "must be 1 to 64 characters")
      .refine((s) => storableText(s) && !/\p{Cc}/u.test(s), storableTextMessage)
      .superRefine((s, ctx) => {
        const problem = channelNameCharacterProblem(s);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      }),
  )
  .openapi({ type: "string", minLength: 1, maxLength: 64 });

/** Direct channels are made by POST /api/direct/:userId only. */
export const createChannelSchema = z
  .object({ name: channelNameSchema, kind: z.enum(["public", "private"], { error: 'must be "public" or "private"' }) })
  .openapi("CreateChannel");

export const channelIdParamsSchema = z.object({
  id: idParam.openapi({ param: { name: "id", in: "path" }, type: "integer" }),
});

export const userIdPathSchema = z.object({
  userId: idParam.openapi({ param: { name: "userId", in: "path" }, type: "integer" }),
});

// Ids are PostgreSQL int4: a larger number is no id at all, refused here rather than failing the query as INTERNAL.
export const addMemberSchema = z
  .object({ userId: z.number({ error: "must be an integer" }).int("must be an integer").positive("must be a positive id").max(MAX_ID, "is too large") })
  .openapi("AddMember");

export const readMarkerSchema = z
  .object({ messageId: z.number({ error: "must be an integer" }).int("must be an integer").min(0, "must not be negative").max(MAX_ID, "is too large") })
  .openapi("ReadMarker");
