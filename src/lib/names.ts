// The package's own table (its function replaces through one regular expression of all 6,311
// sources, ~1 ms a name; a Map lookup per character is the same mapping, a thousand times faster).
import confusables from "unhomoglyph/data.json" with { type: "json" };

// Names people read (usernames, channel names): what they may contain, and when two of them are
// the same name to a reader. api.md §7 "Names".

// Characters that show nothing, or change how the text around them is shown, so a name made with
// them looks like another name, or like no name at all. Bidi controls are default-ignorable too,
// but are named apart: they reorder what follows them (RLO makes "txt.exe" read "exe.txt").
const bidiControl = /\p{Bidi_Control}/u;
const defaultIgnorable = /\p{Default_Ignorable_Code_Point}/u;
// Fillers drawn as blank space: the Hangul fillers are default-ignorable already (listed so the
// message says "filler"); the braille blank U+2800 is an ordinary symbol to Unicode.
const filler = /[\u115F\u1160\u3164\uFFA0\u2800]/u;

/** "U+202E", as the messages name a character. */
export function codePointLabel(char: string): string {
  return `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * Why `name` is refused for an invisible, filler or text-direction character, naming the first
 * one; undefined when it has none.
 */
export function invisibleCharacterProblem(name: string): string | undefined {
  for (const char of name) {
    if (bidiControl.test(char)) return `must not contain text-direction controls (${codePointLabel(char)})`;
    if (filler.test(char)) return `must not contain filler or blank characters (${codePointLabel(char)})`;
    if (defaultIgnorable.test(char)) return `must not contain invisible characters (${codePointLabel(char)})`;
  }
  return undefined;
}

/**
 * Emoji are written with two default-ignorable characters: VS16 asks for the colour form ("❤️")
 * and ZWJ joins pictographs into one ("🏳️‍🌈"). Channel names may have them there, and only there;
 * anywhere else they are as invisible as any other. (The skeleton drops both, so "❤️ fans" and
 * "❤ fans" are still one name.)
 */
export function withoutEmojiJoiners(name: string): string {
  return name
    .replace(/(\p{Extended_Pictographic}\p{Emoji_Modifier}?)\uFE0F/gu, "$1")
    .replace(/(?<=\p{Extended_Pictographic}\p{Emoji_Modifier}?)\u200D(?=\p{Extended_Pictographic})/gu, "");
}

/** Case folding as the username key has always done it: upper- then lower-case of the NFC form (ß/SS, ς/σ/Σ, ſ/s). */
export function foldCase(text: string): string {
  return text.normalize("NFC").toUpperCase().toLowerCase().normalize("NFC");
}

const ignorables = /\p{Default_Ignorable_Code_Point}/gu;
const prototypes = new Map<string, string>(Object.entries(confusables as Record<string, string>));
const toPrototypes = (text: string) => Array.from(text, (char) => prototypes.get(char) ?? char).join("");

/**
 * The confusable skeleton of Unicode UTS #39 §4: NFD, default-ignorable characters removed, each
 * character replaced by its prototype from Unicode's confusables.txt (the `unhomoglyph` package's
 * table, generated from that file, version 13.0.0), NFD again. Repeated until it no longer changes:
 * a dozen of the table's prototypes decompose into characters that have prototypes of their own.
 */
export function confusableSkeleton(text: string): string {
  let current = text;
  for (let i = 0; i < 4; i++) {
    const next = toPrototypes(current.normalize("NFD").replace(ignorables, "")).normalize("NFD");
    if (next === current) break;
    current = next;
  }
  return current;
}

/**
 * What makes two names one name to a reader, for the unique `name_skeleton` columns: the skeleton,
 * case-folded (names are case-insensitive: "Alice" is "alice"), and the skeleton of that, so that a
 * look-alike in either case matches ("AIice" with a capital I, "g00gle" with zeros). Runs of spaces
 * count as one. Case folding before the skeleton instead would lose "I" looking like "l"; what it
 * would add (ſ, which folds to s but looks like f) the folded username key already catches.
 */
export function nameSkeleton(name: string): string {
  return confusableSkeleton(foldCase(confusableSkeleton(name))).replace(/\s+/gu, " ");
}
