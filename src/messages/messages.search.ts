import { Prisma } from "../generated/prisma/client.ts";
import type { ChannelsService } from "../channels/channels.service.ts";
import type { Db } from "../lib/db.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { SearchHit, SearchQuery } from "./messages.schemas.ts";
import { toChatMessage } from "./message-rows.ts";

/**
 * Full-text search over messages (api.md §8).
 *
 * The index (migration 20261124000000_message_search) is GIN over
 *   to_tsvector('russian', content) || to_tsvector('simple', content)
 * PostgreSQL's `russian` configuration stems Cyrillic words with the Russian stemmer and
 * ASCII words with the English one, so "сообщения" finds "сообщение" and "messages" finds
 * "message". The `simple` half keeps each word as written, so the last word, matched as a
 * prefix, also finds words whose stem is shorter than what was typed ("runn" → "running").
 * The expression here must stay identical to the index's, or the planner cannot use it.
 */
const documentVector = Prisma.sql`(to_tsvector('russian'::regconfig, m.content) || to_tsvector('simple'::regconfig, m.content))`;

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
};

export type MessageSearch = ReturnType<typeof createMessageSearch>;

export function createMessageSearch({ db, channels }: { db: Db; channels: ChannelsService }) {
  return {
    /** Best match first (then newest), over the channels the reader is a member of. */
    async search(reader: AuthUser, { q, channelId, before, limit }: SearchQuery): Promise<SearchHit[]> {
      if (channelId !== undefined) await channels.assertMember(reader.id, channelId);
      const terms = searchTerms(q);
      if (terms.length === 0) return [];
      const rows = await db.$queryRaw<HitRow[]>`
        WITH query AS (SELECT ${matchQuery(terms)} AS q, ${highlightQuery(terms)} AS marks),
        hits AS (
          SELECT m.id, m.channel_id, m.user_id, m.content, m.created_at, m.edited_at,
            ts_rank_cd(${documentVector}, query.q) AS rank
          FROM messages m, query
          WHERE ${documentVector} @@ query.q
            AND m.deleted_at IS NULL
            AND m.channel_id IN (SELECT channel_id FROM channel_members WHERE user_id = ${reader.id}::int)
            AND (${channelId ?? null}::int IS NULL OR m.channel_id = ${channelId ?? null}::int)
            AND (${before ?? null}::int IS NULL OR m.id < ${before ?? null}::int)
          ORDER BY rank DESC, m.id DESC
          LIMIT ${limit}::int
        )
        SELECT h.id, h.channel_id, h.user_id, u.username, h.content, h.created_at, h.edited_at,
          ts_headline('simple'::regconfig,
            translate(translate(h.content, ${MARK_START + MARK_END + LT + GT}, ''), '<>', ${LT + GT}),
            query.marks, ${headlineOptions}) AS headline
        FROM hits h JOIN users u ON u.id = h.user_id, query
        ORDER BY h.rank DESC, h.id DESC`;
      return rows.map((r) => ({
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
      }));
    },
  };
}
