import { SQL } from "bun";
import { adminUrl, databaseUrl, GENERAL_CHANNEL_ID } from "./database.ts";

/**
 * Chat-like text for the search scenario, made by PostgreSQL itself so a million rows take
 * seconds, not minutes: 4,096 sentences of 6–16 words drawn from a small vocabulary with a
 * skew (the first words are the most frequent), then one message per row, each a sentence
 * picked by a hash of its number. Deterministic: the same rows on every run.
 *
 * The common word is the vocabulary's first, in about two messages of three; the rare word is
 * appended to one message in 100,000 (10 in a million).
 */
export const COMMON_WORD = "fox";
export const RARE_WORD = "okapi";

const vocabulary: string[] = [
  COMMON_WORD, "the", "a", "to", "and", "is", "it", "you", "that", "in", "we", "for", "on", "this", "lunch", "meeting",
  "deploy", "tomorrow", "today", "code", "review", "build", "test", "please", "thanks", "ok", "sure", "yes", "no", "maybe",
  "bug", "fix", "release", "branch", "merge", "ticket", "customer", "server", "database", "latency", "coffee", "weekend",
  "call", "doc", "draft", "plan", "budget", "quarter", "report", "team", "quick", "brown", "jumps", "over", "lazy", "dog",
  "hello", "world", "good", "morning", "night", "see", "later", "back", "soon", "working", "from", "home", "office",
  "train", "late", "early", "ready", "done", "started", "stuck", "help", "question", "answer", "idea", "great", "nice",
  "cool", "awesome", "sorry", "wait", "minute", "hour", "week", "month", "friday", "monday", "sprint", "retro", "demo",
  "launch", "metrics", "alert", "outage", "incident", "pager", "sleep", "music", "movie", "game", "football", "weather",
];

/**
 * Adds `count` messages to `channelId`, authored round-robin by `userIds`, over `sql`'s database
 * (two connections, so the rows go in as two halves at once, one per core), then analyses the
 * table. The search index is dropped while rows go in and built once at the end (one pass instead
 * of one update per row), from its own definition, so this works whatever that definition is.
 */
export async function insertSearchMessages(sql: SQL, count: number, { channelId, userIds }: { channelId: number; userIds: number[] }): Promise<void> {
  const [{ def }] = await sql`SELECT pg_get_indexdef('messages_search_idx'::regclass) AS def`;
  await sql`DROP INDEX messages_search_idx`;
  await sql`CREATE UNLOGGED TABLE IF NOT EXISTS search_seed_sentences (n int PRIMARY KEY, content text NOT NULL)`;
  await sql`TRUNCATE search_seed_sentences`;
  // The words are plain lowercase letters (checked), so they can be written into the statement.
  if (!vocabulary.every((w) => /^[a-z]+$/.test(w))) throw new Error("the vocabulary must be plain lowercase words");
  await sql.unsafe(`INSERT INTO search_seed_sentences (n, content)
    SELECT s, (SELECT string_agg(v.w[1 + floor(array_length(v.w, 1) * power((abs(hashint8(s::bigint * 64 + k)) % 1000000) / 1000000.0, 2))::int], ' ')
                 FROM generate_series(1, 6 + s % 11) k)
      FROM generate_series(0, 4095) s, (SELECT ARRAY[${vocabulary.map((w) => `'${w}'`).join(",")}]::text[] AS w) v`);
  const insert = (from: number, to: number) => sql`
    INSERT INTO messages (channel_id, user_id, content)
    SELECT ${channelId}::int, (${userIds}::int[])[1 + i % ${userIds.length}::int],
           s.content || CASE WHEN i % 100000 = 7 THEN ${" " + RARE_WORD} ELSE '' END
      FROM generate_series(${from}::int, ${to}::int) i
      JOIN search_seed_sentences s ON s.n = abs(hashint4(i)) % 4096
     ORDER BY i`;
  const half = Math.floor(count / 2);
  await Promise.all([insert(1, half), insert(half + 1, count)]);
  await sql`DROP TABLE search_seed_sentences`;
  await sql.unsafe(def as string);
  await sql`VACUUM ANALYZE messages`;
}

/**
 * A copy of `template` with `messages` more messages in general (authored round-robin by the
 * template's users), for the search scenario's servers to clone.
 */
export async function createSearchTemplate(template: string, messages: number): Promise<{ name: string; drop(): Promise<void> }> {
  const name = `chat_bench_search_tpl_${process.pid}`;
  const admin = new SQL(adminUrl, { max: 1 });
  await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  await admin.unsafe(`CREATE DATABASE "${name}" TEMPLATE "${template}"`);
  const sql = new SQL(databaseUrl(name), { max: 2 });
  try {
    const users: { id: number }[] = await sql`SELECT id FROM users ORDER BY id`;
    await insertSearchMessages(sql, messages, { channelId: GENERAL_CHANNEL_ID, userIds: users.map((u) => u.id) });
  } finally {
    await sql.close();
  }
  return {
    name,
    async drop() {
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.close();
    },
  };
}
