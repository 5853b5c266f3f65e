-- Search reads each message's document vector from a stored column instead of parsing the text
-- again for every row it looks at (api.md §7, search bounds): checking a candidate and ranking it
-- then cost a read, which is what lets the planner walk the newest messages for a common word and
-- stop after SEARCH_MAX_CANDIDATES matches. Generated from content, so every insert, edit and erasure
-- keeps it current. Adding it rewrites the table once. The expression is the one the previous index
-- used, so matches and ranks are unchanged. (No semicolons in comments: Prisma's pg adapter splits
-- scripts at every one.)
ALTER TABLE "messages" ADD COLUMN "search_vector" tsvector GENERATED ALWAYS AS (to_tsvector('russian'::regconfig, "content") || to_tsvector('simple'::regconfig, "content")) STORED;
DROP INDEX "messages_search_idx";
CREATE INDEX "messages_search_idx" ON "messages" USING GIN ("search_vector");
