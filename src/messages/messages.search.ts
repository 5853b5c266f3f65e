import { Prisma } from "../generated/prisma/client.ts";
import type { ChannelsService } from "../channels/channels.service.ts";
import type { Db } from "../lib/db.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { SearchHit, SearchQuery } from "./messages.schemas.ts";
import { toChatMessage } from "./messages.service.ts";

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

/** At most this many words of `q` are used; the rest would only narrow an already narrow search. */
const MAX_WORDS = 16;

/** Letters (with their combining marks) and digits: everything else in `q` only separates words. */
const wordPattern = /[\p{L}\p{M}\p{N}]+/gu;

// Private-use characters mark the matches in ts_headline's output. They are removed from the
// text first, so every marker is ours; the excerpt is then HTML-escaped and they become <mark>.
const MARK_START = "\uE000";
const MARK_END = "\uE001";
const headlineOptions = `StartSel=${MARK_START}, StopSel=${MARK_END}, MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "`;

/** The words of `q`, as the search uses them. */
export function searchWords(q: string): string[] {
  return (q.normalize("NFC").match(wordPattern) ?? []).slice(0, MAX_WORDS);
}

/**
 * A tsquery built from words only, each passed as a bound parameter: every word must match
 * (as a stem), and the last also as a prefix of a stem or of a word as written. No part of
 * the user's text is ever parsed as query syntax, so no input can make it fail.
 */
function tsQuery(words: string[]): Prisma.Sql {
  const last = words.at(-1)!;
  const whole = words.slice(0, -1).map((w) => Prisma.sql`plainto_tsquery('russian'::regconfig, ${w})`);
  const prefix = Prisma.sql`(to_tsquery('russian'::regconfig, ${last + ":*"}) || to_tsquery('simple'::regconfig, ${last + ":*"}))`;
  return Prisma.join([...whole, prefix], " && ");
}

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");

/** ts_headline's output made safe to render: escaped, with our markers turned into <mark>. */
export function toHighlight(headline: string): string {
  return escapeHtml(headline).replaceAll(MARK_START, "<mark>").replaceAll(MARK_END, "</mark>");
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
      const words = searchWords(q);
      if (words.length === 0) return [];
      const rows = await db.$queryRaw<HitRow[]>`
        WITH query AS (SELECT ${tsQuery(words)} AS q),
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
          ts_headline('russian'::regconfig, translate(h.content, ${MARK_START + MARK_END}, ''), query.q, ${headlineOptions}) AS headline
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
