import { z } from "@hono/zod-openapi";
import { idParam, limitParam } from "../lib/schemas.ts";

export const flagsQuerySchema = z.object({
  before: idParam.optional().openapi({ type: "integer", description: "older than this flag id" }),
  limit: limitParam(1, 200, 50),
});

export type FlagsQuery = z.output<typeof flagsQuerySchema>;

const flaggedMessageSchema = z.union([
  z.object({ id: z.number().int(), channelId: z.number().int(), userId: z.number().int(), content: z.string() }),
  z.object({ id: z.number().int(), channelId: z.number().int(), userId: z.number().int(), deleted: z.literal(true) }),
]);

export const flagEntrySchema = z
  .object({
    id: z.number().int(),
    source: z.enum(["words", "model"]).openapi({ description: "words: the local word list; model: the model refused it, or failed with MODERATION_FAIL=closed" }),
    reason: z.string(),
    createdAt: z.string().openapi({ format: "date-time" }),
    message: flaggedMessageSchema.openapi({ description: "The flagged message; `{ id, channelId, userId, deleted: true }` once deleted" }),
  })
  .openapi("ModerationFlag");

export type FlagEntry = z.infer<typeof flagEntrySchema>;
