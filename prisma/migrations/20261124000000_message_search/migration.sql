-- Full-text search over messages (api.md §8). The `russian` configuration stems Cyrillic words
-- as Russian and ASCII words as English, and `simple` keeps every word as written, for prefix
-- matches. The expression must match src/messages/messages.search.ts exactly for the planner to
-- use it. (No semicolons in comments: Prisma's pg adapter splits scripts at every one.)
CREATE INDEX "messages_search_idx" ON "messages" USING GIN ((to_tsvector('russian'::regconfig, "content") || to_tsvector('simple'::regconfig, "content")));
