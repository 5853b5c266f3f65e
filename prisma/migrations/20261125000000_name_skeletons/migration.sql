-- Look-alike names are one name (api.md §7 "Names"). The skeleton is computed by the application
-- (src/lib/names.ts, from Unicode's confusables.txt), which SQL cannot do, so the rows that exist
-- now are filled in when the service starts (src/lib/name-skeletons.ts), oldest first: a row whose
-- skeleton an older row already holds keeps NULL and goes on working as before. NULLs never
-- collide in a unique index, so this migration cannot fail on existing look-alikes.
ALTER TABLE "users" ADD COLUMN "name_skeleton" TEXT;
CREATE UNIQUE INDEX "users_name_skeleton_key" ON "users"("name_skeleton");

-- Channel names are unique among public channels only: private ones are seen by their members
-- alone (two teams may both have "standup"), and refusing a name because a private channel has it
-- would reveal that channel. Direct channels have generated names and no skeleton.
ALTER TABLE "channels" ADD COLUMN "name_skeleton" TEXT;
CREATE UNIQUE INDEX "channels_public_name_skeleton_key" ON "channels"("name_skeleton") WHERE "kind" = 'public';
