-- Conversations (api.md §8). The brief's single room becomes channel 1, "general".
CREATE TYPE "ChannelKind" AS ENUM ('public', 'private', 'direct');

CREATE TABLE "channels" (
    "id" SERIAL NOT NULL,
    "name" VARCHAR(64) NOT NULL,
    "kind" "ChannelKind" NOT NULL,
    "created_by" INTEGER,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "direct_key" TEXT,

    CONSTRAINT "channels_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "channels_direct_key_key" ON "channels"("direct_key");

INSERT INTO "channels" ("id", "name", "kind") VALUES (1, 'general', 'public');
SELECT setval(pg_get_serial_sequence('channels', 'id'), 1);

CREATE TABLE "channel_members" (
    "channel_id" INTEGER NOT NULL,
    "user_id" INTEGER NOT NULL,
    "joined_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_read_id" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "channel_members_pkey" PRIMARY KEY ("channel_id","user_id")
);

CREATE INDEX "channel_members_user_id_idx" ON "channel_members"("user_id");
ALTER TABLE "channel_members" ADD CONSTRAINT "channel_members_channel_id_fkey" FOREIGN KEY ("channel_id") REFERENCES "channels"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "channel_members" ADD CONSTRAINT "channel_members_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Every existing user is in general.
INSERT INTO "channel_members" ("channel_id", "user_id") SELECT 1, "id" FROM "users";

-- Existing messages were all in the one room.
ALTER TABLE "messages" ADD COLUMN "channel_id" INTEGER NOT NULL DEFAULT 1,
ADD COLUMN "deleted_at" TIMESTAMPTZ(3),
ADD COLUMN "edited_at" TIMESTAMPTZ(3);

CREATE INDEX "messages_channel_id_id_idx" ON "messages"("channel_id", "id");
ALTER TABLE "messages" ADD CONSTRAINT "messages_channel_id_fkey" FOREIGN KEY ("channel_id") REFERENCES "channels"("id") ON DELETE CASCADE ON UPDATE CASCADE;
