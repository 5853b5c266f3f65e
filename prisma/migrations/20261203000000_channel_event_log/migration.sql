-- The channel event log (api.md §11). Every change to a channel's timeline (a message created,
-- edited or deleted) is a row here with the channel's next sequence number, written in the same
-- statement as the change, under the channel's advisory lock. `channels.seq` is the head: the
-- newest number given out (0 for none). An event names its message, not a copy of it: replay
-- renders the message as it is now, so erased text is not kept a second time (src/messages/channel-log.ts).
-- `type`: 0 created, 1 edited, 2 deleted. Old rows are pruned by age (EVENT_LOG_RETENTION_HOURS), hence
-- the BRIN index: rows arrive in time order, and it costs the write path almost nothing.
-- (No semicolons in comments: Prisma's pg adapter splits scripts at every one.)
ALTER TABLE "channels" ADD COLUMN "seq" INTEGER NOT NULL DEFAULT 0;

CREATE TABLE "channel_events" (
    "channel_id" INTEGER NOT NULL,
    "seq" INTEGER NOT NULL,
    "type" SMALLINT NOT NULL,
    "message_id" INTEGER NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "channel_events_pkey" PRIMARY KEY ("channel_id", "seq"),
    CONSTRAINT "channel_events_channel_id_fkey" FOREIGN KEY ("channel_id") REFERENCES "channels"("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX "channel_events_created_at_idx" ON "channel_events" USING BRIN ("created_at");

-- Messages stored before the log: each channel's history becomes its first events, in id order
-- (ids were given in commit order per channel), so a client that resumes from 0 gets every message.
INSERT INTO "channel_events" ("channel_id", "seq", "type", "message_id", "created_at")
SELECT "channel_id", row_number() OVER (PARTITION BY "channel_id" ORDER BY "id"), 0, "id", "created_at" FROM "messages";
UPDATE "channels" c SET "seq" = e.n FROM (SELECT "channel_id", count(*)::int AS n FROM "channel_events" GROUP BY "channel_id") e WHERE e."channel_id" = c."id";
