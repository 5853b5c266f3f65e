import { z } from "@hono/zod-openapi";
import { codePoints, idParam, limitParam, MAX_ID, storableText, storableTextMessage } from "../lib/schemas.ts";

/**
 * A message as a client sends it, over Socket.IO or REST (api.md §3). The same schema
 * validates both, so both refuse the same things with the same details.
 */
export const messageInputSchema = z
  .object({
    content: z
      .string({ error: "must be a string" })
      .max(16_000, "must be at most 4000 characters")
      .transform((s) => s.trim())
      .pipe(
        z
          .string()
          .refine((s) => codePoints(s) >= 1, "must not be empty")
          .refine((s) => codePoints(s) <= 4000, "must be at most 4000 characters")
          .refine(storableText, storableTextMessage),
      )
      .openapi({ type: "string", minLength: 1, maxLength: 4000 }),
    userId: z
      .number({ error: "must be an integer" })
      .int("must be an integer")
      .optional()
      .openapi({ description: "if sent, must equal the token's user" }),
    channelId: z
      .number({ error: "must be an integer" })
      .int("must be an integer")
      .positive("must be a positive id")
      .max(MAX_ID, "is too large")
      .optional()
      .openapi({ description: "the channel to post in; general when left out" }),
    clientId: z
      .string({ error: "must be a string" })
      .min(1, "must not be empty")
      .max(64, "must be at most 64 characters")
      .refine(storableText, storableTextMessage)
      .optional()
      .openapi({ description: "idempotency key chosen by the client" }),
  })
  .openapi("MessageInput");

export type MessageInput = z.output<typeof messageInputSchema>;

export const messageSchema = z
  .object({
    id: z.number().int(),
    channelId: z.number().int(),
    userId: z.number().int(),
    username: z.string(),
    content: z.string(),
    timestamp: z.string().openapi({ format: "date-time" }),
  })
  .openapi("Message");

export type ChatMessage = z.infer<typeof messageSchema>;

export const historyQuerySchema = z
  .object({
    limit: limitParam(1, 200, 50),
    before: idParam.optional().openapi({ type: "integer", description: "older than this id, newest first" }),
    after: idParam.optional().openapi({ type: "integer", description: "newer than this id, oldest first" }),
  })
  .refine((q) => q.before === undefined || q.after === undefined, {
    message: "use either before or after, not both",
    path: ["after"],
  });

export type HistoryQuery = z.output<typeof historyQuerySchema>;
