import type { PoolClient } from "pg";
import pLimit from "p-limit";
import { Prisma } from "../generated/prisma/client.ts";
import type { ChannelsService } from "../channels/channels.service.ts";
import type { Config } from "../config.ts";
import { isDatabaseUnavailable, poolOf, type Db } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { consumeOrThrow, type Limiter } from "../lib/rate-limit.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { SearchHit, SearchQuery } from "./messages.schemas.ts";
import { toChatMessage } from "./message-rows.ts";

/**
 * Full-text search over messages (api.md §8), with bounded work (api.md §7, search bounds).
 *
 * Each message's document is stored in `messages.search_vector` (migration
 * 20261125100000_message_search_vector), generated from
 *   to_tsvector('russian', content) || to_tsvector('simple', content)
 * and GIN-indexed by `messages_search_idx`. PostgreSQL's `russian` configuration stems Cyrillic
 * words with the Russian stemmer and ASCII words with the English one, so "сообщения" finds
 * "сообщение" and "messages" finds "message". The `simple` half keeps each word as written, so the
 * last word, matched as a prefix, also finds words whose stem is shorter than what was typed
 * ("runn" → "running").
 *
 * The bounds, so that a query's cost does not grow with the number of its matches and searches
 * cannot take the connections sends and reads need:
 * - only the newest SEARCH_MAX_CANDIDATES matches (with id < `before`) are ranked. They are found
 *   by walking the reader's newest messages (at most WINDOW_PER_CANDIDATE per candidate), which a
 *   common word fills quickly, and only for a rarer word from the GIN index (see searchStatement).
 *   Reading the stored vector makes checking and ranking a row a read, not a parse of its text;
 * - the match query is written into the statement and the reader's channels are passed as a list,
 *   so the planner sees the words' and the channels' frequencies;
 * - each search runs in its own read-only transaction with statement_timeout at what is left of
 *   SEARCH_TIMEOUT_MS and without parallel workers (one backend per search, never three);
 * - at most SEARCH_MAX_CONCURRENCY searches run at once per instance; the others wait their turn,
 *   within the same deadline;
 * - RATE_LIMIT_SEARCH per user.
 */
const documentVector = Prisma.sql`m.search_vector`;

/** At most this many whitespace-separated terms of `q` are used. */
const MAX_TERMS = 16;

/** Letters (with their combining marks) and digits: the words inside a term, for prefixes. */
const wordPattern = /[\p{L}\p{M}\p{N}]+/gu;

// Private-use characters carry markup through ts_headline: U+E000/U+E001 mark the matches, and
// U+E002/U+E003 stand in for "<" and ">", which ts_headline would otherwise parse as HTML tags and
// drop. Any already in the text are removed first, so every one in the output is ours; the excerpt
// is then HTML-escaped and they become <mark>, </mark>, &lt; and &gt;.
const MARK_START = "\uE000";
const MARK_END = "\uE001";
const LT = "\uE002";
const GT = "\uE003";
const headlineOptions = `StartSel=${MARK_START}, StopSel=${MARK_END}, MaxWords=35, MinWords=15`;

/**
 * The terms of `q`: its whitespace-separated pieces that hold at least one letter or digit,
 * each with the words inside it. A term goes to plainto_tsquery whole, so "3.14", "e-mail" or
 * "user@example.com" match the single lexemes PostgreSQL's parser makes of them.
 */
export function searchTerms(q: string): { text: string; words: string[] }[] {
  return q
    .normalize("NFC")
    .replaceAll("\u0000", "")
    .toWellFormed()
    .split(/\s+/u)
    .map((text) => ({ text, words: text.match(wordPattern) ?? [] }))
    .filter((term) => term.words.length > 0)
    .slice(0, MAX_TERMS);
}

/** `word` as a prefix of a stem or of a word as written ("runn" finds "running", stemmed "run"). */
const prefixOf = (word: string) =>
  Prisma.sql`(to_tsquery('russian'::regconfig, ${word + ":*"}) || to_tsquery('simple'::regconfig, ${word + ":*"}))`;

/**
 * The search query: every term must match (as stems, through plainto_tsquery, which takes any
 * text and never fails), and the last one may instead match with its last word as a prefix,
 * for search-as-you-type. Terms and words are bound parameters, and to_tsquery only ever sees
 * letters and digits followed by ":*", so no input is query syntax and none can fail.
 */
function matchQuery(terms: { text: string; words: string[] }[]): Prisma.Sql {
  const whole = terms.map(({ text }) => Prisma.sql`plainto_tsquery('russian'::regconfig, ${text})`);
  const last = terms.at(-1)!;
  const typing = Prisma.join([...last.words.slice(0, -1).map((w) => Prisma.sql`plainto_tsquery('russian'::regconfig, ${w})`), prefixOf(last.words.at(-1)!)], " && ");
  return Prisma.join([...whole.slice(0, -1), Prisma.sql`(${whole.at(-1)!} || (${typing}))`], " && ");
}

/**
 * What the highlight marks: any word of `q` as a prefix of a stem or of a word as written.
 * The excerpt is parsed with `simple` (words as written), so both kinds of prefix apply.
 */
function highlightQuery(terms: { words: string[] }[]): Prisma.Sql {
  return Prisma.join(
    terms.flatMap((t) => t.words).map(prefixOf),
    " || ",
  );
}

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");

/** ts_headline's output made safe to render: escaped, with our markers turned into markup. */
export function toHighlight(headline: string): string {
  return escapeHtml(headline).replaceAll(MARK_START, "<mark>").replaceAll(MARK_END, "</mark>").replaceAll(LT, "&lt;").replaceAll(GT, "&gt;");
}

type HitRow = {
  id: number;
  channel_id: number;
  user_id: number;
  username: string;
  content: string;
  created_at: Date;
  edited_at: Date | null;
  headline: string;
  candidates: number;
  oldest: number;
};

/** What a search answers: the hits, and where the next window starts when there may be older matches. */
export interface SearchResult {
  hits: SearchHit[];
  /** Set when SEARCH_MAX_CANDIDATES matches were found: `before=` this id looks at the next older ones. */
  nextBefore?: number;
}

const MAX_ID = 2_147_483_647;

/** How many of the reader's newest messages a search reads one by one, per candidate it may rank. */
export const WINDOW_PER_CANDIDATE = 10;

/**
 * The whole search as one statement (the bounds are in the module comment's terms):
 *
 * 1. `recent`: the reader's newest `window` messages older than `before`, walked newest first, and
 *    the matches among them, stopping at `candidates` of them. A walk of at most `window` rows,
 *    each checked by reading its stored vector: a common word fills the candidates after a few
 *    hundred rows.
 * 2. Only when that found fewer (the word is rarer than one in WINDOW_PER_CANDIDATE of the newest
 *    messages) and the window was full (there are older messages): the older matches, from the GIN
 *    index, newest first. `older` is a CTE of its own so that the planner fetches them from the
 *    index rather than walking the table backwards (its estimates for words it has no statistics
 *    for are far too high, and the walk would read every older row for a rare word).
 * 3. The candidates ranked with ts_rank_cd, the best `limit` with their authors and excerpts, and
 *    how many candidates there were and the oldest of them (for the next window's `before`).
 *
 * Exported for the tests, which EXPLAIN exactly this.
 */
export function searchStatement(terms: { text: string; words: string[] }[], opts: { channelIds: number[]; before?: number; limit: number; candidates: number }): Prisma.Sql {
  const match = matchQuery(terms);
  const before = opts.before ?? MAX_ID;
  const window = opts.candidates * WINDOW_PER_CANDIDATE;
  return Prisma.sql`
    WITH boundary AS (
      SELECT m.id FROM messages m
      WHERE m.channel_id = ANY(${opts.channelIds}::int[]) AND m.id < ${before}::int
      ORDER BY m.id DESC OFFSET ${window - 1}::int LIMIT 1
    ),
    older AS MATERIALIZED (
      SELECT m.id FROM messages m
      WHERE ${documentVector} @@ (${match})
        AND m.deleted_at IS NULL
        AND m.channel_id = ANY(${opts.channelIds}::int[])
        AND (SELECT id FROM boundary) IS NOT NULL
    ),
    candidates AS (
      (SELECT r.id FROM (
         SELECT m.id, ${documentVector} AS document, m.deleted_at FROM messages m
         WHERE m.channel_id = ANY(${opts.channelIds}::int[]) AND m.id < ${before}::int
         ORDER BY m.id DESC
         LIMIT ${window}::int
       ) r
       WHERE r.document @@ (${match}) AND r.deleted_at IS NULL
       ORDER BY r.id DESC
       LIMIT ${opts.candidates}::int)
      UNION ALL
      (SELECT o.id FROM older o WHERE o.id < (SELECT id FROM boundary) ORDER BY o.id DESC LIMIT ${opts.candidates}::int)
      LIMIT ${opts.candidates}::int
    ),
    hits AS (
      SELECT c.id, ts_rank_cd(${documentVector}, ${match}) AS rank
      FROM candidates c JOIN messages m ON m.id = c.id
      ORDER BY rank DESC, c.id DESC
      LIMIT ${opts.limit}::int
    )
    SELECT m.id, m.channel_id, m.user_id, u.username, m.content, m.created_at, m.edited_at,
      ts_headline('simple'::regconfig,
        translate(translate(m.content, ${MARK_START + MARK_END + LT + GT}, ''), '<>', ${LT + GT}),
        ${highlightQuery(terms)}, ${headlineOptions}) AS headline,
      (SELECT count(*)::int FROM candidates) AS candidates,
      (SELECT min(id) FROM candidates) AS oldest
    FROM hits h JOIN messages m ON m.id = h.id JOIN users u ON u.id = m.user_id
    ORDER BY h.rank DESC, h.id DESC`;
}

/** The answer when a search cannot finish in time: 503, retry shortly (api.md §7). */
export const searchTooSlow = (timeoutMs: number) =>
  new AppError(
    "UNAVAILABLE",
    `The search did not finish within ${timeoutMs} ms (the server is busy or the words are too common); retry shortly, or narrow it with more words or a channelId`,
    undefined,
    1,
  );

/** SQLSTATE 57014: the statement was cancelled, here by the search's own statement_timeout. */
const isCancelled = (error: unknown) => (error as { code?: unknown } | undefined)?.code === "57014";

export type MessageSearch = ReturnType<typeof createMessageSearch>;

export function createMessageSearch({
  db,
  channels,
  config,
  limiter,
}: {
  db: Db;
  channels: ChannelsService;
  config: Pick<Config, "SEARCH_TIMEOUT_MS" | "SEARCH_MAX_CONCURRENCY" | "SEARCH_MAX_CANDIDATES" | "DATABASE_TIMEOUT_MS">;
  /** RATE_LIMIT_SEARCH, per user; none when "off". */
  limiter?: Limiter;
}) {
  const pool = poolOf(db);
  const slots = pLimit(config.SEARCH_MAX_CONCURRENCY);
  const timeoutMs = Math.min(config.SEARCH_TIMEOUT_MS, config.DATABASE_TIMEOUT_MS);

  /** `work` on one connection in a read-only transaction whose statements end by `deadline`. */
  async function inTransaction<T>(deadline: number, work: (client: PoolClient) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    // Between our queries the connection may fail with no query to report it to: not a crash.
    const ignore = () => undefined;
    client.on("error", ignore);
    let broken: Error | undefined;
    try {
      // It may have waited for the connection past its deadline.
      const left = Math.floor(deadline - performance.now());
      if (left < 10) throw searchTooSlow(timeoutMs);
      try {
        // One round trip; `left` is an integer we computed, so it can be written into the text.
        await client.query(`BEGIN READ ONLY; SET LOCAL statement_timeout = ${left}; SET LOCAL max_parallel_workers_per_gather = 0`);
        const result = await work(client);
        await client.query("COMMIT");
        return result;
      } catch (error) {
        await client.query("ROLLBACK").catch((failure: Error) => (broken = failure));
        // A connection that failed under the statement may not know it yet: discarded, not reused.
        // One whose statement its own statement_timeout cancelled is fine once rolled back.
        if (!isCancelled(error) && isDatabaseUnavailable(error)) broken ??= error as Error;
        throw error;
      }
    } finally {
      client.removeListener("error", ignore);
      client.release(broken);
    }
  }

  /**
   * `run` in one of the search slots, answered by the deadline whatever happens: a search still
   * waiting for a slot or a connection then is refused (and skipped when its turn comes), and
   * one running is cancelled by its statement_timeout.
   */
  function withinDeadline<T>(run: (deadline: number) => Promise<T>): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    const queued = slots(() => (performance.now() < deadline ? run(deadline) : Promise.reject(searchTooSlow(timeoutMs))));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      // A little after the server's own cancellation, so a statement that was cancelled answers first.
      timer = setTimeout(() => reject(searchTooSlow(timeoutMs)), timeoutMs + 50);
    });
    queued.catch(() => undefined);
    return Promise.race([queued, late]).finally(() => clearTimeout(timer));
  }

  return {
    /** Best match first (then newest) among the newest matches, over the channels the reader is a member of. */
    async search(reader: AuthUser, { q, channelId, before, limit }: SearchQuery): Promise<SearchResult> {
      await consumeOrThrow(limiter, String(reader.id), "Too many searches; wait before searching again");
      if (channelId !== undefined) await channels.assertMember(reader.id, channelId);
      const terms = searchTerms(q);
      if (terms.length === 0) return { hits: [] };
      let rows: HitRow[];
      try {
        rows = await withinDeadline((deadline) =>
          inTransaction(deadline, async (client) => {
            const channelIds =
              channelId !== undefined
                ? [channelId]
                : (await client.query<{ channel_id: number }>("SELECT channel_id FROM channel_members WHERE user_id = $1", [reader.id])).rows.map((r) => r.channel_id);
            const statement = searchStatement(terms, { channelIds, before, limit, candidates: config.SEARCH_MAX_CANDIDATES });
            return (await client.query<HitRow>(statement.text, statement.values as unknown[])).rows;
          }),
        );
      } catch (error) {
        if (isCancelled(error)) throw searchTooSlow(timeoutMs);
        throw error;
      }
      const full = rows.length > 0 && rows[0]!.candidates >= config.SEARCH_MAX_CANDIDATES;
      return {
        hits: rows.map((r) => ({
          message: toChatMessage({
            id: r.id,
            channelId: r.channel_id,
            userId: r.user_id,
            content: r.content,
            createdAt: r.created_at,
            editedAt: r.edited_at,
            user: { username: r.username },
          }),
          highlight: toHighlight(r.headline),
        })),
        ...(full ? { nextBefore: rows[0]!.oldest } : {}),
      };
    },
  };
}
