import { z } from "@hono/zod-openapi";
import { atMostUnits } from "../lib/schemas.ts";

/** The most messages one summary covers, for `last` and for `since` alike (the newest ones of the range). */
export const MAX_SUMMARY_MESSAGES = 1000;

/** ISO-8601 date-time with a `Z` or an offset ("2026-11-23T21:04:31.220Z", "2026-11-23T22:04+01:00"). */
const isoDateTime = z.iso.datetime({ offset: true, local: false });

/**
 * `GET /api/channels/:id/summary`: exactly one of `since` (a past ISO-8601 time) or `last`
 * (the newest 1–1000 messages). The same schema validates requests and documents them.
 */
export const summaryQuerySchema = z
  .object({
    since: z
      .string()
      .refine(atMostUnits(64), "must be an ISO-8601 date-time such as 2026-11-23T21:04:31Z")
      .refine((s) => isoDateTime.safeParse(s).success, "must be an ISO-8601 date-time such as 2026-11-23T21:04:31Z")
      .transform((s) => new Date(s))
      .refine((d) => !Number.isNaN(d.getTime()), "must be an ISO-8601 date-time such as 2026-11-23T21:04:31Z")
      .refine((d) => d.getTime() <= Date.now(), "must not be in the future")
      .optional()
      .openapi({ type: "string", format: "date-time", description: "summarise the messages sent at or after this time (at most the newest 1000)" }),
    last: z
      .string()
      .regex(/^\d{1,10}$/, "must be an integer")
      .transform(Number)
      .pipe(z.number().int().min(1, "must be at least 1").max(MAX_SUMMARY_MESSAGES, `must be at most ${MAX_SUMMARY_MESSAGES}`))
      .optional()
      .openapi({ type: "integer", minimum: 1, maximum: MAX_SUMMARY_MESSAGES, description: "summarise the newest n messages" }),
  })
  .superRefine((q, ctx) => {
    if (q.since !== undefined && q.last !== undefined) ctx.addIssue({ code: "custom", path: ["last"], message: "use either since or last, not both" });
    if (q.since === undefined && q.last === undefined) ctx.addIssue({ code: "custom", path: ["last"], message: "give since=<ISO time> or last=<n>" });
  });

export type SummaryQuery = z.output<typeof summaryQuerySchema>;

export const summarySchema = z
  .object({
    summary: z.string().openapi({ description: 'the model\'s summary; "" when the range has no messages' }),
    messageCount: z.number().int().openapi({ description: "messages summarised (deleted ones are left out)" }),
    from: z.string().nullable().openapi({ format: "date-time", description: "time of the first message summarised; null when there is none" }),
    to: z.string().nullable().openapi({ format: "date-time", description: "time of the last message summarised; null when there is none" }),
    model: z.string().openapi({ description: "the model that wrote it (LLM_MODEL)" }),
  })
  .openapi("ChannelSummary");

export type ChannelSummaryView = z.infer<typeof summarySchema>;
