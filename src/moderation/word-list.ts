/**
 * The local word list of api.md §10 (MODERATION_WORDS): fast, no model. Whole words only,
 * case-insensitive and Unicode-aware: the list and each message are compared after NFKC
 * normalisation and lower-casing (so full-width `ＢＡＤ` and `Bad` match `bad`), and a word
 * matches only between boundaries of letters, digits and marks, in any script (so `ass` is not
 * found in `class`, nor `кот` in `котлета`). An entry may be several words (`buy now`).
 */
export interface WordList {
  /** The first listed word `content` contains, or undefined. */
  match(content: string): string | undefined;
  readonly size: number;
}

const fold = (text: string) => text.normalize("NFKC").toLowerCase();

const escape = (text: string) => text.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");

export function createWordList(words: readonly string[]): WordList {
  const entries = [...new Set(words.map((w) => fold(w).trim()).filter((w) => w !== ""))];
  // One pass over the message for the whole list; longer entries first so a phrase wins over its first word.
  const pattern =
    entries.length === 0
      ? undefined
      : new RegExp(`(?<![\\p{L}\\p{N}\\p{M}])(?:${[...entries].sort((a, b) => b.length - a.length).map(escape).join("|")})(?![\\p{L}\\p{N}\\p{M}])`, "u");
  return {
    size: entries.length,
    match(content) {
      if (!pattern) return undefined;
      return pattern.exec(fold(content))?.[0];
    },
  };
}
