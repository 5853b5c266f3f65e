import { describe, expect, setDefaultTimeout, test } from "bun:test";
// A stored hash as the service makes one (argon2id, Bun's defaults).
const hashPassword = (password: string) => Bun.password.hash(password, { algorithm: "argon2id" });
import { createTestDatabase } from "./helpers/db.ts";
import { expectError } from "./helpers/expect-error.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { productionEnv, startServerProcess } from "./helpers/process.ts";
import { startTestServer, type Json } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 15, findings 2 and 8 (api.md §1, §7 "Names", §8): usernames and channel names refuse
// invisible, filler and text-direction characters; a name whose confusable skeleton (UTS #39)
// matches an existing one's is taken; ADMIN_USERNAMES names are reserved for exactly that name;
// `general` is reserved; rows stored before these rules keep working.

const ADMIN = "secadmin";
const t = await startTestServer({ env: { ADMIN_USERNAMES: ADMIN } });
const sql = t.database.sql;
const api = apiFor(t);
const password = "correct horse battery";

const register = (username: string) => api("POST", "/api/auth/register", undefined, { username, password });
const login = (username: string, url = t.url) =>
  fetch(`${url}/api/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password }) });
const countUsers = async (): Promise<number> => (await sql`SELECT count(*)::int AS n FROM users`)[0].n;
const countChannels = async (): Promise<number> => (await sql`SELECT count(*)::int AS n FROM channels`)[0].n;
const hex = (s: string) => [...s].map((c) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`).join(" ");

const alice = await t.register("alice");
const creator = await t.register("channel_maker");

// The characters of finding 8 and their relatives: each one invisible, blank, or reordering the text.
const invisible: [label: string, char: string][] = [
  ["U+034F COMBINING GRAPHEME JOINER", "\u034F"],
  ["U+FE0F VARIATION SELECTOR-16", "\uFE0F"],
  ["U+E0100 VARIATION SELECTOR-17", "\u{E0100}"],
  ["U+3164 HANGUL FILLER", "\u3164"],
  ["U+115F HANGUL CHOSEONG FILLER", "\u115F"],
  ["U+1160 HANGUL JUNGSEONG FILLER", "\u1160"],
  ["U+FFA0 HALFWIDTH HANGUL FILLER", "\uFFA0"],
  ["U+2800 BRAILLE PATTERN BLANK", "\u2800"],
  ["U+200B ZERO WIDTH SPACE", "\u200B"],
  ["U+200C ZERO WIDTH NON-JOINER", "\u200C"],
  ["U+200D ZERO WIDTH JOINER", "\u200D"],
  ["U+2060 WORD JOINER", "\u2060"],
  ["U+FEFF ZERO WIDTH NO-BREAK SPACE", "\uFEFF"],
  ["U+00AD SOFT HYPHEN", "\u00AD"],
  ["U+180B MONGOLIAN FREE VARIATION SELECTOR ONE", "\u180B"],
  ["U+17B4 KHMER VOWEL INHERENT AQ", "\u17B4"],
  ["U+E0061 TAG LATIN SMALL LETTER A", "\u{E0061}"],
  ["U+202E RIGHT-TO-LEFT OVERRIDE", "\u202E"],
  ["U+202D LEFT-TO-RIGHT OVERRIDE", "\u202D"],
  ["U+2066 LEFT-TO-RIGHT ISOLATE", "\u2066"],
  ["U+2067 RIGHT-TO-LEFT ISOLATE", "\u2067"],
  ["U+200F RIGHT-TO-LEFT MARK", "\u200F"],
  ["U+061C ARABIC LETTER MARK", "\u061C"],
];

/** The VALIDATION_FAILED details for `path` name the offending code point. */
async function expectRefusedCharacter(res: Response, path: string, char: string) {
  const body = await expectError(res, 400, "VALIDATION_FAILED", path);
  const messages = body.error.details!.filter((d) => d.path === path).map((d) => d.message);
  expect(messages.join(" | ")).toContain(hex(char));
}

describe("usernames: invisible, filler and text-direction characters are refused", () => {
  const rows: [label: string, name: string, char: string][] = [
    // The issue's own examples, next to `alice`.
    ["alice + U+034F", "alice\u034F", "\u034F"],
    ["alice + VS16", "alice\uFE0F", "\uFE0F"],
    ["alice + U+3164", "alice\u3164", "\u3164"],
    ["all filler ㅤㅤㅤ", "\u3164\u3164\u3164", "\u3164"],
    ["RLO inside", "ali\u202Ece", "\u202E"],
    ["ZWSP inside", "ali\u200Bce", "\u200B"],
    ...invisible.map(([label, c]): [string, string, string] => [`bob + ${label}`, `bob${c}x`, c]),
  ];
  test.each(rows)("%s → 400 VALIDATION_FAILED naming the code point; nothing stored", async (_label, name, char) => {
    const before = await countUsers();
    await expectRefusedCharacter(await register(name), "username", char);
    expect(await countUsers()).toBe(before);
  });
});

describe("usernames: a name whose confusable skeleton matches an existing one's is taken", () => {
  const generic = { error: { code: "USERNAME_TAKEN", message: "That username is already taken" } };
  test.each([
    ["Cyrillic а (U+0430) for a", "\u0430lice"],
    ["Cyrillic а and е", "\u0430lic\u0435"],
    ["Cyrillic і (U+0456) for i", "al\u0456ce"],
    ["capital I for l", "AIice"],
    ["digit 1 for l", "a1ice"],
    ["fullwidth letters", "\uFF41\uFF4C\uFF49\uFF43\uFF45"],
    ["mathematical bold letters", "\u{1D41A}\u{1D425}\u{1D422}\u{1D41C}\u{1D41E}"],
    ["another case (as before)", "ALICE"],
  ])("%s → 409 USERNAME_TAKEN with the same answer as any taken name; nothing stored", async (_label, name) => {
    const before = await countUsers();
    const res = await register(name);
    const body = await expectError(res, 409, "USERNAME_TAKEN");
    expect(body).toEqual(generic);
    expect(await countUsers()).toBe(before);
    // The original account is untouched and is the one its name logs in to.
    const signIn = await login("alice");
    expect(((await expectStatus(signIn, 200)) as Json).user.id).toBe(alice.user.id);
  });

  test("m and rn, 0 and O: look-alikes across letters are one name too", async () => {
    const first = await t.register("modern_0tto");
    expect(first.user.username).toBe("modern_0tto");
    for (const name of ["rnodern_0tto", "modern_Otto", "MODERN_OTTO"]) await expectError(await register(name), 409, "USERNAME_TAKEN");
  });
});

describe("usernames: ordinary names in any script still register and log in", () => {
  test.each(["José", "Zoë", "田中花子", "Ωmega", "Алиса", "Jose", "Zoe", "अनिल_कुमार", "สมชาย", "x.y-z_9"])("%p → 201, logs in", async (name) => {
    const res = await register(name);
    const body = await expectStatus(res, 201);
    expect(body.user.username).toBe(name);
    expect(body.user.role).toBe("user");
    expect(((await expectStatus(await login(name), 200)) as Json).user.id).toBe(body.user.id);
  });
});

describe("ADMIN_USERNAMES: a listed name is reserved for exactly that name", () => {
  const squats: [label: string, name: string][] = [
    ["ſecadmin (U+017F LONG S folds to s)", "\u017Fecadmin"],
    ["Secadmin (another case)", "Secadmin"],
    ["SECADMIN", "SECADMIN"],
    ["Cyrillic ѕ (U+0455)", "\u0455ecadmin"],
    ["Cyrillic а in the middle", "sec\u0430dmin"],
    ["rn for m", "secadrnin"],
  ];

  test.each(squats)("before the real one registers: %s → 409 USERNAME_TAKEN, no account, nobody made admin", async (_label, name) => {
    const before = await countUsers();
    await expectError(await register(name), 409, "USERNAME_TAKEN");
    expect(await countUsers()).toBe(before);
    expect(await sql`SELECT username FROM users WHERE role = 'admin'`).toEqual([]);
  });

  test("the listed name itself registers as admin (audited), and the look-alikes stay refused afterwards", async () => {
    const since = (await sql`SELECT coalesce(max(id), 0)::int AS id FROM audit_log`)[0].id;
    const admin = await t.register(ADMIN);
    expect(admin.user).toMatchObject({ username: ADMIN, role: "admin" });
    expect(await sql`SELECT username, role::text AS role FROM users WHERE role = 'admin'`).toEqual([{ username: ADMIN, role: "admin" }]);
    expect(await sql`SELECT action, actor_id, target_id, meta FROM audit_log WHERE id > ${since} AND action = 'register'`).toEqual([
      { action: "register", actor_id: admin.user.id, target_id: String(admin.user.id), meta: { role: "admin" } },
    ]);
    for (const [, name] of squats) await expectError(await register(name), 409, "USERNAME_TAKEN");
    expect((await sql`SELECT count(*)::int AS n FROM users WHERE role = 'admin'`)[0].n).toBe(1);
  });
});

describe("channel names", () => {
  const create = (name: unknown, kind: "public" | "private" = "public") => api("POST", "/api/channels", creator.token, { name, kind });

  const rows: [label: string, name: string, char: string][] = [
    ["RLO: U+202E + 'general'", "\u202Egeneral", "\u202E"],
    ["RLO inside a name", "team \u202Etxt.exe", "\u202E"],
    ["ZWSP inside 'general'", "gen\u200Beral", "\u200B"],
    ["all filler", "\u3164\u3164", "\u3164"],
    ["braille blanks only", "\u2800\u2800\u2800", "\u2800"],
    ["U+FFF9 INTERLINEAR ANNOTATION ANCHOR (a format character)", "a\uFFF9b", "\uFFF9"],
    ["U+0600 ARABIC NUMBER SIGN (a format character)", "\u0600team", "\u0600"],
    ["U+2028 LINE SEPARATOR", "two\u2028lines", "\u2028"],
    ["U+2029 PARAGRAPH SEPARATOR", "two\u2029lines", "\u2029"],
    ["VS16 after a letter, not an emoji", "team\uFE0F", "\uFE0F"],
    ["ZWJ between two letters", "te\u200Dam", "\u200D"],
    ...invisible.map(([label, c]): [string, string, string] => [`team + ${label}`, `team${c}x`, c]),
  ];
  test.each(rows)("%s → 400 VALIDATION_FAILED naming the code point; nothing stored", async (_label, name, char) => {
    const before = await countChannels();
    await expectRefusedCharacter(await create(name), "name", char);
    expect(await countChannels()).toBe(before);
  });

  test.each([
    ["general", "general", "public"],
    ["a second general, private", "general", "private"],
    ["General", "General", "public"],
    ["GENERAL", "GENERAL", "private"],
    ["Cyrillic е (U+0435)", "g\u0435neral", "public"],
    ["script g (U+0261)", "\u0261eneral", "public"],
    ["padded", "  general ", "public"],
  ] as const)("`general` is reserved: %s → 409 CHANNEL_NAME_TAKEN; nothing stored", async (_label, name, kind) => {
    const before = await countChannels();
    await expectError(await create(name, kind), 409, "CHANNEL_NAME_TAKEN");
    expect(await countChannels()).toBe(before);
  });

  test("public names are unique by skeleton; a private one may not look like a public one", async () => {
    const random: Json = await expectStatus(await create("random"), 201);
    expect(random.name).toBe("random");
    for (const [name, kind] of [
      ["random", "public"],
      ["Random", "public"],
      ["r\u0430ndom", "public"],
      ["rand\u043Em", "private"],
      ["random", "private"],
    ] as const) {
      const before = await countChannels();
      await expectError(await create(name, kind), 409, "CHANNEL_NAME_TAKEN");
      expect(await countChannels()).toBe(before);
    }
    // Runs of spaces look like one.
    await expectStatus(await create("two words"), 201);
    await expectError(await create("two  words"), 409, "CHANNEL_NAME_TAKEN");
  });

  test("private names need not be unique, and a private name never blocks a public one (its existence is not revealed)", async () => {
    await expectStatus(await create("backstage", "private"), 201);
    await expectStatus(await create("backstage", "private"), 201);
    const other = await t.register("outsider");
    const res = await api("POST", "/api/channels", other.token, { name: "backstage", kind: "public" });
    expect(((await expectStatus(res, 201)) as Json).kind).toBe("public");
  });

  test("emoji keep their VS16 and ZWJ, and the plain spelling is the same name", async () => {
    for (const [name, twin] of [
      ["\u2764\uFE0F fans", "\u2764 fans"], // ❤️ and ❤
      ["\u{1F3F3}\uFE0F\u200D\u{1F308} pride", "\u{1F3F3}\u{1F308} pride"], // 🏳️‍🌈 and 🏳🌈
      ["\u{1F44D}\u{1F3FD}\u200D\u{1F44D}", "\u{1F44D}\u{1F3FD}\u{1F44D}"], // a joiner after a skin tone
    ]) {
      const channel: Json = await expectStatus(await create(name!), 201);
      expect(channel.name).toBe(name);
      await expectError(await create(twin!), 409, "CHANNEL_NAME_TAKEN");
    }
  });

  test.each(["café ☕", "日本語", "Ωmega chat", "José's room", "Zoë", "田中"])("%p → 201", async (name) => {
    const channel: Json = await expectStatus(await create(name), 201);
    expect(channel.name).toBe(name);
  });

  test("direct channels (generated names) are unaffected", async () => {
    const a = await t.register("dm_a");
    const b = await t.register("dm_b");
    const c = await t.register("dm_c");
    await expectStatus(await api("POST", `/api/direct/${b.user.id}`, a.token), 201);
    await expectStatus(await api("POST", `/api/direct/${c.user.id}`, a.token), 201);
  });
});

describe("rows stored before these rules (the real entry point, after the migration)", () => {
  test("keep working: look-alike and invisible names log in, old channels stay; the older row holds the name; the squatter is not promoted", async () => {
    const database = await createTestDatabase();
    const db = database.sql;
    const hash = await hashPassword(password);
    // As an older version stored them: no skeleton. The lower id is the older row.
    const legacy = [
      ["bob", "bob"],
      ["b\u043Eb", "b\u043Eb"], // Cyrillic о: a look-alike of bob, accepted then
      ["carol\u034F", "carol\u034F"], // an invisible character, accepted then
      ["\u017Fecadmin", "secadmin"], // the squat of finding 2: its key is the listed name's
    ];
    const ids: number[] = [];
    for (const [username, key] of legacy) {
      ids.push((await db`INSERT INTO users (username, username_key, password_hash) VALUES (${username}, ${key}, ${hash}) RETURNING id`)[0].id);
    }
    const channelIds: number[] = [];
    for (const [name, kind] of [
      ["random", "public"],
      ["r\u0430ndom", "public"],
      ["general", "public"],
      ["\u202Egeneral", "public"],
      ["gen\u200Beral", "private"],
    ]) {
      const id = (await db`INSERT INTO channels (name, kind, created_by) VALUES (${name}, ${kind}::"ChannelKind", ${ids[0]}) RETURNING id`)[0].id;
      channelIds.push(id);
      await db`INSERT INTO channel_members (channel_id, user_id) VALUES (${id}, ${ids[0]})`;
    }
    await db`INSERT INTO channel_members (channel_id, user_id) SELECT 1, id FROM users`;

    const server = await startServerProcess(productionEnv(database.url, { ADMIN_USERNAMES: ADMIN }));
    try {
      // Oldest first: each row got its skeleton unless an older one holds it.
      const filled = await server.waitForLog((l) => l.msg === "name skeletons filled in");
      expect(filled).toMatchObject({ users: { filled: 3, lookalikes: 1 }, channels: { filled: 3, lookalikes: 3 } });
      // Every old account still logs in under its stored name.
      for (const [i, [username]] of legacy.entries()) {
        const body: Json = await expectStatus(await login(username!, server.url), 200);
        expect(body.user).toMatchObject({ id: ids[i], username });
      }
      // The squatting row is not promoted at start-up (only the exact listed name is), and it is said why.
      expect((await db`SELECT role::text AS role FROM users WHERE id = ${ids[3]}`)[0].role).toBe("user");
      const warned = await server.waitForLog((l) => l.msg === "ADMIN_USERNAMES: an account looks like a listed name but is not it; not promoted");
      expect(warned).toMatchObject({ listed: ADMIN, account: "\u017Fecadmin" });

      // Old channels, look-alike ones included, are listed and usable by their member.
      const bob: Json = await expectStatus(await login("bob", server.url), 200);
      const listRes = await fetch(`${server.url}/api/channels`, { headers: { authorization: `Bearer ${bob.token}` } });
      const listed = ((await expectStatus(listRes, 200)) as Json[]).map((c) => c.id);
      expect(listed).toEqual([1, ...channelIds]);

      // New look-alikes of old names are refused; the older row holds each name.
      const at = (path: string, body: unknown, token?: string) =>
        fetch(`${server.url}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify(body),
        });
      for (const name of ["b0b", "BOB", "carol"]) await expectError(await at("/api/auth/register", { username: name, password }), 409, "USERNAME_TAKEN");
      for (const name of ["Random", "gener\u0430l"]) await expectError(await at("/api/channels", { name, kind: "public" }, bob.token), 409, "CHANNEL_NAME_TAKEN");
      const skeletons = await db`SELECT id, name_skeleton FROM users WHERE id IN ${db(ids)} ORDER BY id`;
      expect(skeletons.map((r: Json) => r.name_skeleton !== null)).toEqual([true, false, true, true]);
      const channelSkeletons = await db`SELECT id, name_skeleton FROM channels WHERE id IN ${db([1, ...channelIds])} ORDER BY id`;
      expect(channelSkeletons.map((r: Json) => r.name_skeleton !== null)).toEqual([true, true, false, false, false, true]);
    } finally {
      expect((await server.stop()).code).toBe(0);
    }

    // A restart leaves the grandfathered rows as they are and starts as before.
    const again = await startServerProcess(productionEnv(database.url, { ADMIN_USERNAMES: ADMIN }));
    try {
      expect(((await expectStatus(await login("b\u043Eb", again.url), 200)) as Json).user.id).toBe(ids[1]);
    } finally {
      expect((await again.stop()).code).toBe(0);
    }
  }, 60_000);
});
