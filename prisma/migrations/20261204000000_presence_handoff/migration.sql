-- Presence across a restart (api.md §8, src/presence/presence.socket.ts): a graceful stop writes the
-- users online on this instance and until when their grace (PRESENCE_GRACE_MS) lasts, and the next
-- process takes them over at start (it reads and empties the table), so users back within the grace
-- are announced neither offline nor online. One instance only: with Redis the counts are shared.
-- (No semicolons in comments: Prisma's pg adapter splits scripts at every one.)
CREATE TABLE "presence_handoffs" (
    "user_id" INTEGER NOT NULL,
    "until" TIMESTAMPTZ(3) NOT NULL,
    CONSTRAINT "presence_handoffs_pkey" PRIMARY KEY ("user_id"),
    CONSTRAINT "presence_handoffs_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE
);
