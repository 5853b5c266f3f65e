import { z } from "@hono/zod-openapi";
import { atMostUnits, codePoints, idParam, MAX_ID, storableText, storableTextMessage } from "../lib/schemas.ts";

export const channelKindSchema = z.enum(["public", "private", "direct"]);

/** api.md §8: `{ id, name, kind, createdAt, unread }`. */
export const channelSchema = z
  .object({
    id: z.number().int(),
    name: z.string(),
    kind: channelKindSchema,
    createdAt: z.string().openapi({ format: "date-time" }),
    unread: z.number().int().openapi({ description: "messages after the caller's read marker" }),
  })
  .openapi("Channel");

export type ChannelView = z.infer<typeof channelSchema>;

/** Channel names: trimmed, NFC, 1–64 code points, no control characters. */
export const channelNameSchema = z
  .string({ error: "must be a string" })
  .refine(atMostUnits(1024), "must be at most 64 characters")
  .transform((s) => s.trim().normalize("NFC"))
  .pipe(
    z
      .string()
      .refine((s) => codePoints(s) >= 1 && codePoints(s) <= 64, "must be 1 to 64 characters")
      .refine((s) => storableText(s) && !/\p{Cc}/u.test(s), storableTextMessage),
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
