import { readFileSync } from "node:fs";
import fc from "fast-check";
import { errorStatus } from "../../src/lib/errors.ts";
import { saneRequestId } from "./expect-error.ts";

// Hostile input for the fuzz tests (test/fuzz*.test.ts): JSON of every kind written as text (so
// it can hold what JSON.stringify never makes: duplicate keys, own `__proto__` keys, 1e400,
// nesting deeper than any parser recursion), mutations of valid bodies, raw bytes, query
// strings and header values; plus the check every answer must pass and a bounded-concurrency runner.

/** The seed every fuzz section derives its own from; FUZZ_SEED=<n> replays a failed run. */
export const fuzzSeed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

// ---------------------------------------------------------------------------------------------
// A JSON document as a tree that keeps what a JS object cannot.

/** An object as its entries, in order, duplicates and `__proto__` included. */
export class Obj {
  constructor(readonly entries: [string, Json][]) {}
}

/** JSON text used as is: numbers JS cannot round-trip, deep nesting, broken fragments. */
export class RawJson {
  constructor(readonly text: string) {}
}

/** Raw bytes (a socket.io binary attachment, or a body that is not text at all). */
export class Bytes {
  constructor(readonly bytes: Uint8Array) {}
}

export type Json = null | boolean | number | string | Json[] | Obj | RawJson | Bytes;

/** The tree as JSON text (`Bytes` become an array of numbers). */
export function toText(value: Json): string {
  if (value instanceof Obj) return `{${value.entries.map(([k, v]) => `${JSON.stringify(k)}:${toText(v)}`).join(",")}}`;
  if (value instanceof RawJson) return value.text;
  if (value instanceof Bytes) return JSON.stringify([...value.bytes.subarray(0, 64)]);
  if (Array.isArray(value)) return `[${value.map(toText).join(",")}]`;
  return JSON.stringify(value) ?? "null";
}

/**
 * The tree as a JS value for socket.io-client to serialize: `__proto__` and other keys as own
 * properties (defineProperty, so no prototype is ever set), the last of duplicate keys winning,
 * `RawJson` parsed when it parses (kept as its text when not), `Bytes` as a Uint8Array.
 */
export function toValue(value: Json): unknown {
  if (value instanceof Obj) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of value.entries) Object.defineProperty(out, k, { value: toValue(v), enumerable: true, configurable: true, writable: true });
    return out;
  }
  if (value instanceof RawJson) {
    try {
      return JSON.parse(value.text);
    } catch {
      return value.text;
    }
  }
  if (value instanceof Bytes) return value.bytes;
  if (Array.isArray(value)) return value.map(toValue);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Hand-picked tables.

/** Keys that trip naive code: prototype keys, empty and odd names, and the API's own field names. */
export const hostileKeys = [
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "valueOf",
  "hasOwnProperty",
  "__defineGetter__",
  "isPrototypeOf",
  "then",
  "toJSON",
  "length",
  "0",
  "",
  " ",
  "\u0000",
  "💥",
  "content",
  "username",
  "password",
  "refreshToken",
  "channelId",
  "userId",
  "clientId",
  "messageId",
  "name",
  "kind",
  "role",
  "reason",
];

/** Strings that trip naive code or storage: NUL, lone surrogates, control and format characters, injections, lengths at and past the limits. */
export const hostileStrings = [
  "",
  " ",
  "\t\r\n",
  "\u0000",
  "a\u0000b",
  "\ud800",
  "\udfff",
  "x\ud83d",
  "\udc00\ud800",
  "null",
  "undefined",
  "NaN",
  "-0",
  "1e309",
  "0x10",
  "[]",
  "{}",
  '{"__proto__":{"admin":true}}',
  "<script>alert(1)</script>",
  "' OR 1=1 --",
  "'; DROP TABLE users; --",
  "%00",
  "%",
  "../../etc/passwd",
  "\u202e\u2066",
  "\ufeff",
  "\uffff\ufffe",
  "\u0301\u0301\u0301\u0301",
  "İ",
  "ß",
  "ǅ",
  "\r\n\r\nHTTP/1.1 200 OK",
  "${7*7}",
  "{{7*7}}",
  "general",
  "public",
  "private",
  "direct",
  "admin",
  "moderator",
  "user",
  "login_failed",
  "a".repeat(4000),
  "a".repeat(4001),
  " ".repeat(5000),
  "x".repeat(16_001),
  "𝕏".repeat(1000),
  "\u0301".repeat(600),
];

/** JSON numbers that JS parses to something surprising, or that overflow int4. */
export const rawNumbers = [
  "1e400",
  "-1e400",
  "1e-400",
  "-0",
  "0.0",
  "1.0",
  "1E2",
  "123456789012345678901234567890",
  "2147483647",
  "2147483648",
  "-2147483649",
  "9007199254740993",
  "4.9e-324",
];

/**
 * Objects that throw when code coerces them or their `length`/`size` to a primitive: JSON can
 * shadow `valueOf` and `toString` with non-functions (zod's length checks once compared such a
 * `length` with a number and threw: a 500).
 */
export const trapObjects: Obj[] = [
  new Obj([["length", new Obj([["valueOf", null], ["toString", null]])]]),
  new Obj([["length", new Obj([["toString", 1]])]]),
  new Obj([["length", new Obj([["valueOf", new Obj([])], ["toString", new Obj([])]])]]),
  new Obj([["length", new RawJson("1e400")]]),
  new Obj([["length", "99999"]]),
  new Obj([["length", -1]]),
  new Obj([["size", new Obj([["valueOf", null], ["toString", null]])]]),
  new Obj([["valueOf", null], ["toString", null]]),
  new Obj([["toJSON", null]]),
  new Obj([["then", null]]),
  new Obj([["__proto__", new Obj([["length", new Obj([["valueOf", null], ["toString", null]])]])]]),
];

/** Hand-picked values for any field of any body or payload: each must be refused (or, rarely, be valid), never a 5xx. */
export const handPickedValues: [label: string, value: Json][] = [
  ...trapObjects.map((o, i): [string, Json] => [`trap object ${i + 1} ${toText(o).slice(0, 60)}`, o]),
  ["a NUL", "a\u0000b"],
  ["a lone high surrogate", "ab\ud800"],
  ["a lone low surrogate", "\udfffab"],
  ["surrogates in the wrong order", "\udc00\ud800"],
  ["16,001 characters", "x".repeat(16_001)],
  ["60,000 characters", "x".repeat(60_000)],
  ["5,000 nested arrays", new RawJson("[".repeat(5000) + "]".repeat(5000))],
  ["1e400 (Infinity once parsed)", new RawJson("1e400")],
  ["-0", new RawJson("-0")],
  ["2^31", 2 ** 31],
  ["2^53 + 1 as written", new RawJson("9007199254740993")],
  ["a fraction", 1.5],
  ["an array of strings", ["a", "b"]],
  ["an object with a __proto__ key", new Obj([["__proto__", new Obj([["isAdmin", true], ["role", "admin"]])]])],
  ["an object with a constructor key", new Obj([["constructor", new Obj([["prototype", new Obj([["role", "admin"]])]])]])],
  ["null", null],
  ["true", true],
  ["an empty object", new Obj([])],
  ["an empty array", []],
  ["an empty string", ""],
];

/** JSON text that is broken, or valid only in some dialects. */
export const brokenJson = [
  "",
  "{",
  "}",
  "[",
  '{"a":',
  '{"a"}',
  '{"a":1,}',
  "[1,]",
  "{'a':1}",
  '{"a":NaN}',
  '{"a":Infinity}',
  '{"a":undefined}',
  '{"a":01}',
  '{"a":1}//',
  '{"a":1}/* */',
  '{"a":"\\x41"}',
  '{"a":"\\u12"}',
  '{"a":"\\ud800"}',
  '{"a":"unterminated}',
  "\ufeff{}",
  "nul",
  "tru",
  '"',
  "{}{}",
  "[]]",
  '{"a":1}garbage',
  "\u0000",
];

// ---------------------------------------------------------------------------------------------
// Arbitraries.

/** Strings: the table, random code points (BMP and astral), graphemes, control characters, lone surrogates, long runs. */
export function hostileString(maxHuge: number): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...hostileStrings.filter((s) => s.length * 4 <= maxHuge)) },
    { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
    { weight: 2, arbitrary: fc.string({ unit: "binary-ascii", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.array(fc.integer({ min: 0xd800, max: 0xdfff }), { minLength: 1, maxLength: 8 }).map((units) => String.fromCharCode(...units)) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.constantFrom("x", "é", "𝕏", " ", "\u0000", "\u0301"), fc.integer({ min: 100, max: Math.max(100, Math.floor(maxHuge / 4)) }))
        .map(([c, n]) => c.repeat(n)),
    },
  );
}

/** Deep nesting, written as text: arrays, objects, both mixed, and left unclosed. */
export function deepNesting(maxDepth: number): fc.Arbitrary<RawJson> {
  return fc.tuple(fc.integer({ min: 2, max: maxDepth }), fc.constantFrom("array", "object", "mixed", "unclosed")).map(([depth, kind]) => {
    if (kind === "array") return new RawJson("[".repeat(depth) + "]".repeat(depth));
    if (kind === "object") return new RawJson('{"a":'.repeat(depth) + "1" + "}".repeat(depth));
    if (kind === "mixed") return new RawJson('[{"__proto__":'.repeat(depth) + "null" + "}]".repeat(depth));
    return new RawJson("[".repeat(depth));
  });
}

export interface JsonOptions {
  /** Largest string, in bytes (bodies: past the 64 KiB limit; socket payloads: under it). */
  maxHuge: number;
  maxDepth: number;
  /** Binary leaves (socket.io attachments); JSON bodies have none. */
  binary?: boolean;
}

/** JSON values of every kind, hostile ones heavily weighted. */
export function hostileJson({ maxHuge, maxDepth, binary = false }: JsonOptions): fc.Arbitrary<Json> {
  const key = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...hostileKeys) }, { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }) });
  const leaves: fc.Arbitrary<Json>[] = [
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.constantFrom(0, -1, 1, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), 2 ** 53, Number.MAX_VALUE, Number.MIN_VALUE, 0.5, -0.5),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(...rawNumbers).map((t) => new RawJson(t)),
    hostileString(maxHuge),
    hostileString(maxHuge),
    deepNesting(maxDepth),
    fc.constantFrom(...trapObjects),
  ];
  if (binary) leaves.push(fc.uint8Array({ maxLength: 64 }).map((b) => new Bytes(b)));
  const { value } = fc.letrec<{ value: Json; array: Json[]; object: Obj }>((tie) => ({
    value: fc.oneof({ depthSize: "small", maxDepth: 4 }, ...leaves, tie("array"), tie("object")),
    array: fc.array(tie("value"), { maxLength: 5 }),
    object: fc.array(fc.tuple(key, tie("value")), { maxLength: 5 }).map((entries) => new Obj(entries)),
  }));
  return value;
}

/** A string changed the ways that matter: padded, repeated past its limit, with a NUL, a lone surrogate or a control character inside. */
export function mutatedString(base: string, maxHuge: number): fc.Arbitrary<string> {
  return fc.oneof(
    fc.tuple(fc.nat(base.length), hostileString(Math.min(maxHuge, 4096))).map(([at, s]) => base.slice(0, at) + s + base.slice(at)),
    fc.integer({ min: 2, max: Math.max(2, Math.floor(maxHuge / Math.max(1, base.length))) }).map((n) => base.repeat(n)),
    fc.constantFrom(` ${base} `, base.toUpperCase(), base.normalize("NFD"), base.slice(1), base.slice(0, -1), `${base}\u0000`, `${base}\ud800`, `\u202e${base}`, base + "\u0301".repeat(5)),
  );
}

/** Mutations of JSON text: truncated, a character inserted or removed, quotes swapped, garbage around it. */
export function corruptedText(text: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc.nat(text.length).map((at) => text.slice(0, at)),
    fc.tuple(fc.nat(text.length), fc.constantFrom("{", "}", "[", "]", '"', ",", ":", "\\", "\u0000", "\ud800", "\n", "'", "NaN")).map(([at, c]) => text.slice(0, at) + c + text.slice(at)),
    fc.nat(Math.max(0, text.length - 1)).map((at) => text.slice(0, at) + text.slice(at + 1)),
    fc.constantFrom(text.replaceAll('"', "'"), `\ufeff${text}`, `${text},`, `${text}}`, `[${text}`, `${text}\u0000`, text.replaceAll(":", "="), `${text}${text}`),
    fc.constantFrom(...brokenJson),
  );
}

/**
 * Bodies for a route that takes `base` (a valid body): unchanged, a field replaced by a hostile
 * value or a mutated string, fields dropped, hostile keys added before or after (duplicates
 * included), the whole body replaced or wrapped, or the JSON text corrupted.
 */
export function mutatedBody(base: Record<string, Json>, options: JsonOptions): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 9, arbitrary: mutatedTree(base, options).map(toText) },
    { weight: 1, arbitrary: corruptedText(toText(new Obj(Object.entries(base)))) },
  );
}

/** `mutatedBody` as trees (for socket payloads), without the text corruption. */
export function mutatedTree(base: Record<string, Json>, options: JsonOptions): fc.Arbitrary<Json> {
  const entries = Object.entries(base);
  const keys = Object.keys(base);
  const value = hostileJson(options);
  const key = fc.oneof(fc.constantFrom(...hostileKeys), fc.constantFrom(...keys));
  const replaced = (k: string, v: Json) => new Obj(entries.map(([kk, vv]) => [kk, kk === k ? v : vv]));
  const stringKeys = keys.filter((k) => typeof base[k] === "string");
  const trees: fc.WeightedArbitrary<Json>[] = [
    { weight: 1, arbitrary: fc.constant(new Obj(entries)) },
    { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...keys), value).map(([k, v]) => replaced(k, v)) },
    { weight: 1, arbitrary: fc.subarray(keys).map((kept) => new Obj(entries.filter(([k]) => kept.includes(k)))) },
    { weight: 2, arbitrary: fc.tuple(key, value).map(([k, v]) => new Obj([...entries, [k, v]])) },
    { weight: 2, arbitrary: fc.tuple(key, value).map(([k, v]) => new Obj([[k, v], ...entries])) },
    { weight: 2, arbitrary: value },
    { weight: 1, arbitrary: fc.constantFrom<Json>([new Obj(entries)], new Obj([["data", new Obj(entries)]]), new Obj([["__proto__", new Obj(entries)]])) },
  ];
  if (stringKeys.length > 0) {
    trees.push({
      weight: 3,
      arbitrary: fc.constantFrom(...stringKeys).chain((k) => mutatedString(base[k] as string, options.maxHuge).map((s) => replaced(k, s))),
    });
  }
  return fc.oneof(...trees);
}

/** Bytes that are not valid UTF-8, or not UTF-8 at all. */
export const invalidUtf8: [label: string, bytes: number[]][] = [
  ["0xFF", [0xff]],
  ["0xFE 0xFF", [0xfe, 0xff]],
  ["overlong '/'", [0xc0, 0xaf]],
  ["overlong NUL", [0xc0, 0x80]],
  ["encoded surrogate", [0xed, 0xa0, 0x80]],
  ["past U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
  ["truncated 3-byte", [0xe2, 0x82]],
  ["lone continuation", [0x80]],
  ["5-byte form", [0xf8, 0x88, 0x80, 0x80, 0x80]],
];

const encoder = new TextEncoder();
const bytesOf = (s: string) => [...encoder.encode(s)];

/** Raw bodies: random bytes, invalid UTF-8 alone and inside JSON strings and keys, UTF-16, BOMs, NULs. */
export function rawBody(): fc.Arbitrary<Uint8Array> {
  const bad = fc.constantFrom(...invalidUtf8.map(([, b]) => b));
  return fc
    .oneof(
      fc.uint8Array({ maxLength: 512 }).map((b) => [...b]),
      bad,
      fc.tuple(bad, fc.constantFrom("content", "username", "password", "name", "refreshToken", "reason", "role")).map(([b, k]) => [...bytesOf(`{"${k}":"a`), ...b, ...bytesOf('b"}')]),
      fc.tuple(bad, fc.constantFrom("content", "username")).map(([b, k]) => [...bytesOf('{"'), ...b, ...bytesOf(`":1,"${k}":"x"}`)]),
      fc.constantFrom(
        [0xef, 0xbb, 0xbf, ...bytesOf('{"content":"bom"}')],
        [0xff, 0xfe, ...[...'{"content":"utf16"}'].flatMap((c) => [c.charCodeAt(0), 0])],
        [...'{"content":"utf16be"}'].flatMap((c) => [0, c.charCodeAt(0)]),
        [0, 0, 0, 0],
        bytesOf('{"content":"nul\u0000"}').concat([0]),
        [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00],
      ),
      fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.constantFrom("content", "username")).map(([b, k]) => [...bytesOf(`{"${k}":"`), ...b, ...bytesOf('"}')]),
    )
    .map((b) => new Uint8Array(b));
}

/** Percent-encodes the UTF-8 bytes of `s` (lone surrogates become U+FFFD, as TextEncoder does). */
export const pct = (s: string) => [...encoder.encode(s)].map((b) => `%${b.toString(16).padStart(2, "0").toUpperCase()}`).join("");

/** Query values: near-valid integers, junk percent-encoding (invalid UTF-8 included), hostile strings. */
export function queryValue(): fc.Arbitrary<string> {
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc.constantFrom(
        "1", "2", "50", "100", "200", "201", "1000", "1001", "0", "-1", "1e3", "%201", "1.5", "0x10", "+1", "01",
        "2147483647", "2147483648", "99999999999", "99999999999999999999999", "abc", "", "%", "%Z", "%ZZ", "%E0%A4", "%C0%AF",
        "%00", "%FF%FE", "%ED%A0%80", "%F4%90%80%80", "%2", "+", "++", "%20%20", "login_failed", "register", "__proto__", "%5B%5D",
        "١٢", "%EF%BC%91", // Arabic-Indic digits, a fullwidth 1
      ),
    },
    { weight: 2, arbitrary: hostileString(2048).map(pct) },
    { weight: 2, arbitrary: fc.string({ unit: "grapheme-ascii", maxLength: 30 }).map((s) => s.replace(/[#&]/g, "")) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 16 }).map((b) => [...b].map((x) => `%${x.toString(16).padStart(2, "0")}`).join("")) },
  );
}

/** Query strings for routes that read `keys`: known and hostile keys, repeated, bracketed, with odd separators. */
export function queryString(keys: string[]): fc.Arbitrary<string> {
  const key = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...keys) },
    { weight: 1, arbitrary: fc.constantFrom("__proto__", "constructor", "prototype", "toString", "limit[]", "limit[0]", "a[b]", "", "%00", "%ZZ", "LIMIT") },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme-ascii", maxLength: 8 }).map((s) => s.replace(/[#&=]/g, "")) },
  );
  const pair = fc.oneof(
    { weight: 8, arbitrary: fc.tuple(key, queryValue()).map(([k, v]) => `${k}=${v}`) },
    { weight: 1, arbitrary: key },
    { weight: 1, arbitrary: fc.tuple(key, queryValue()).map(([k, v]) => `${k}=${v}=${v}`) },
  );
  return fc.tuple(fc.array(pair, { maxLength: 6 }), fc.constantFrom("&", "&", "&", "&&", ";")).map(([pairs, sep]) => pairs.join(sep));
}

/** Header values fetch can send (Latin-1, no CR/LF/NUL): hostile tables and random printable text. */
export function headerValue(): fc.Arbitrary<string> {
  const latin1 = fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c));
  return fc.oneof(
    fc.string({ unit: "grapheme-ascii", maxLength: 60 }),
    fc.string({ unit: latin1, maxLength: 60 }),
    fc.constantFrom("", " ", "\t", "x".repeat(8000), "é", "ÿ", ";;;", ",,,", "null", "undefined", "__proto__", "../../", "%00", "%0d%0a"),
  );
}

// ---------------------------------------------------------------------------------------------
// The check every answer must pass.

const leak = /\bat \S+ \(|\.ts:\d+|\/work\/|node_modules|\bstack\b|Error:|Prisma/i;

/**
 * Why an HTTP answer breaks api.md §0, or undefined when it does not: never 5xx; a sane
 * X-Request-Id; a 4xx is JSON exactly `{error: {code, message, details?, retryAfter?}}` with the
 * status its code has, `details` entries exactly `{path, message}` (VALIDATION_FAILED only),
 * `retryAfter` with RATE_LIMITED only, and no stack trace or internal path.
 */
export function answerProblem(status: number, headers: Headers, text: string, method = "GET"): string | undefined {
  if (status >= 500) return `status ${status}`;
  if (status < 200 || (status >= 300 && status < 400)) return `unexpected status ${status}`;
  const requestId = headers.get("x-request-id") ?? "";
  if (!saneRequestId.test(requestId)) return `X-Request-Id ${JSON.stringify(requestId)}`;
  if (status < 400 || method === "HEAD") return undefined;
  if (!/^application\/json\b/.test(headers.get("content-type") ?? "")) return `content type ${headers.get("content-type")}`;
  if (leak.test(text)) return "internal detail in the body";
  return errorBodyProblem(text, status);
}

/** `errorBodyProblem` for a parsed `error` object (a socket ack or `<event>:error`), whose code must be a 4xx one. */
export function errorObjectProblem(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return "error is not an object";
  const code = (error as { code?: unknown }).code;
  const status = typeof code === "string" && code in errorStatus ? errorStatus[code as keyof typeof errorStatus] : undefined;
  if (status === undefined) return `unknown code ${JSON.stringify(code)}`;
  if (status >= 500) return `server-side code ${code}`;
  if (leak.test(JSON.stringify(error))) return "internal detail in the error";
  return errorBodyProblem(JSON.stringify({ error }), status);
}

function errorBodyProblem(text: string, status: number): string | undefined {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return "body is not JSON";
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "body is not an object";
  if (Object.keys(body).join() !== "error") return `body keys ${Object.keys(body).join()}`;
  const error = (body as { error: unknown }).error;
  if (typeof error !== "object" || error === null || Array.isArray(error)) return "error is not an object";
  const { code, message, details, retryAfter } = error as Record<string, unknown>;
  const extra = Object.keys(error).filter((k) => !["code", "message", "details", "retryAfter"].includes(k));
  if (extra.length > 0) return `extra error keys ${extra.join()}`;
  if (typeof code !== "string" || !(code in errorStatus)) return `unknown code ${JSON.stringify(code)}`;
  if (errorStatus[code as keyof typeof errorStatus] !== status) return `code ${code} with status ${status}`;
  if (typeof message !== "string" || message.length === 0) return "message is not a non-empty string";
  if (details !== undefined) {
    if (code !== "VALIDATION_FAILED") return `details with ${code}`;
    if (!Array.isArray(details) || details.length === 0) return "details is not a non-empty array";
    for (const d of details) {
      if (typeof d !== "object" || d === null || Object.keys(d).sort().join() !== "message,path") return `detail ${JSON.stringify(d)}`;
      if (typeof d.path !== "string" || typeof d.message !== "string") return `detail ${JSON.stringify(d)}`;
    }
  }
  if (retryAfter !== undefined && (code !== "RATE_LIMITED" || !Number.isInteger(retryAfter))) return `retryAfter ${JSON.stringify(retryAfter)} with ${code}`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------

/** Runs `fn` over `items` with at most `concurrency` at once. */
export async function inPool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        await fn(items[index]!, index);
      }
    }),
  );
}

/** A process's resident set size in bytes, from /proc/<pid>/status. */
export function residentBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * `residentBytes` once the process has been idle for a moment: the lowest of the readings over
 * `ms` (the garbage collector returns memory in steps after a burst, so one reading right after
 * it says more about when the collector last ran than about what the process keeps).
 */
export async function settledResidentBytes(pid: number, ms = 1_500): Promise<number> {
  let lowest = residentBytes(pid);
  for (let waited = 0; waited < ms; waited += 250) {
    await Bun.sleep(250);
    lowest = Math.min(lowest, residentBytes(pid));
  }
  return lowest;
}

export const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

/** Shortens a value for a failure report. */
export function preview(value: unknown, max = 300): string {
  let text: string;
  if (typeof value === "string") text = value;
  else if (value instanceof Uint8Array) text = `bytes ${Buffer.from(value.subarray(0, max / 2)).toString("hex")}`;
  else {
    try {
      text = JSON.stringify(value, (_k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v)) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
}
