import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import { verify } from "hono/jwt";
import { expectError } from "./helpers/expect-error.ts";
import { startTestServer, testJwtSecret, uniqueName, type Json } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §0 and §1: registration, login, usernames, passwords and tokens.

const t = await startTestServer();
const sql = t.database.sql;

const password = "correct horse battery";
const userKeys = ["createdAt", "id", "role", "username"];
const isoUtc = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

/** A Response whose JSON the tests inspect freely. */
interface JsonResponse extends Response {
  json(): Promise<Json>;
}

function post(path: string, body: string | undefined, contentType: string | null = "application/json", extra: Record<string, string> = {}): Promise<JsonResponse> {
  const headers: Record<string, string> = { ...extra };
  if (contentType !== null) headers["content-type"] = contentType;
  return fetch(`${t.url}${path}`, { method: "POST", headers, body }) as Promise<JsonResponse>;
}

const register = (username: unknown, pw: unknown = password) => post("/api/auth/register", JSON.stringify({ username, password: pw }));
const login = (username: unknown, pw: unknown = password) => post("/api/auth/login", JSON.stringify({ username, password: pw }));

/** Asserts `{ token, refreshToken, user }` with `user` exactly `{ id, username, role, createdAt }`. */
function expectAuthResult(body: Json, username: string) {
  expect(Object.keys(body).sort()).toEqual(["refreshToken", "token", "user"]);
  expect(typeof body.token).toBe("string");
  expect(typeof body.refreshToken).toBe("string");
  expect(Object.keys(body.user).sort()).toEqual(userKeys);
  expect(Number.isInteger(body.user.id)).toBe(true);
  expect(body.user.id).toBeGreaterThan(0);
  expect(body.user.username).toBe(username);
  expect(body.user.role).toBe("user");
  expect(body.user.createdAt).toMatch(isoUtc);
  expect(new Date(body.user.createdAt).toISOString()).toBe(body.user.createdAt);
  expect(Math.abs(Date.parse(body.user.createdAt) - Date.now())).toBeLessThan(60_000);
}

function decodeJwt(token: string): { header: Json; payload: Json; signature: string } {
  const parts = token.split(".");
  expect(parts).toHaveLength(3);
  const [h, p, s] = parts as [string, string, string];
  return {
    header: JSON.parse(Buffer.from(h, "base64url").toString("utf8")),
    payload: JSON.parse(Buffer.from(p, "base64url").toString("utf8")),
    signature: s,
  };
}

const sha256Hex = (s: string) => createHash("sha256").update(s).digest("hex");

async function userCount(): Promise<number> {
  const [row] = await sql`SELECT count(*)::int AS n FROM users`;
  return row.n;
}

async function rowsNamed(username: string): Promise<number> {
  const [row] = await sql`SELECT count(*)::int AS n FROM users WHERE lower(username) = lower(${username.trim().normalize("NFC")})`;
  return row.n;
}

/** How many rows in any table of the public schema contain `needle` anywhere in their text form. */
async function occurrencesInDatabase(needle: string): Promise<number> {
  const tables: { table_name: string }[] = await sql`
    SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`;
  expect(tables.map((r) => r.table_name)).toContain("sessions");
  let total = 0;
  for (const { table_name } of tables) {
    const [row] = await sql.unsafe(`SELECT count(*)::int AS n FROM "${table_name}" AS t WHERE strpos(t::text, $1) > 0`, [needle]);
    total += row.n;
  }
  return total;
}

describe("POST /api/auth/register", () => {
  test("201 { token, refreshToken, user } with user exactly { id, username, role, createdAt }", async () => {
    const name = uniqueName("reg");
    const res = await register(name);
    expect(res.status).toBe(201);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("x-request-id")).toBeTruthy();
    const body = await res.json();
    expectAuthResult(body, name);
    const [row] = await sql`SELECT id, username, role::text AS role, created_at FROM users WHERE id = ${body.user.id}`;
    expect(row.username).toBe(name);
    expect(row.role).toBe("user");
    expect(new Date(row.created_at).toISOString()).toBe(body.user.createdAt);
  });

  test("the password is stored as an argon2id hash, and the hash never appears in a response", async () => {
    const name = uniqueName("hash");
    const res = await register(name);
    const text = await res.text();
    expect(res.status).toBe(201);
    const { user } = JSON.parse(text);
    const [row] = await sql`SELECT password_hash FROM users WHERE id = ${user.id}`;
    expect(row.password_hash).toStartWith("$argon2id$");
    expect(row.password_hash).not.toBe(password);
    expect(row.password_hash).not.toContain(password);
    expect(await Bun.password.verify(password, row.password_hash)).toBe(true);
    expect(await occurrencesInDatabase(password)).toBe(0);

    const loginRes = await login(name);
    const loginText = await loginRes.text();
    expect(loginRes.status).toBe(200);
    for (const responseText of [text, loginText]) {
      expect(responseText).not.toContain(row.password_hash);
      expect(responseText).not.toContain("$argon2");
      expect(responseText).not.toMatch(/password_?hash/i);
      expect(responseText).not.toContain(password);
    }
  });

  test("hashes use OWASP's argon2id parameters (m=19 MiB, t=2, p=1); an older hash (Bun's default, 64 MiB) still signs in and is redone at that login", async () => {
    const name = uniqueName("rehash");
    const { user } = (await (await register(name)).json()) as { user: { id: number } };
    const [fresh] = await sql`SELECT password_hash FROM users WHERE id = ${user.id}`;
    expect(fresh.password_hash).toStartWith("$argon2id$v=19$m=19456,t=2,p=1$");

    const old = await Bun.password.hash(password, { algorithm: "argon2id" });
    expect(old).toStartWith("$argon2id$v=19$m=65536,t=2,p=1$");
    await sql`UPDATE users SET password_hash = ${old} WHERE id = ${user.id}`;
    // A wrong password changes nothing.
    await expectError(await login(name, "not the password!"), 401, "INVALID_CREDENTIALS");
    expect((await sql`SELECT password_hash FROM users WHERE id = ${user.id}`)[0].password_hash).toBe(old);

    expect((await login(name)).status).toBe(200);
    const [redone] = await sql`SELECT password_hash FROM users WHERE id = ${user.id}`;
    expect(redone.password_hash).toStartWith("$argon2id$v=19$m=19456,t=2,p=1$");
    expect(await Bun.password.verify(password, redone.password_hash)).toBe(true);
    expect((await login(name)).status).toBe(200);
  });

  test("fields a client should not set (role, id, passwordHash) are ignored", async () => {
    const name = uniqueName("mass");
    const res = await post(
      "/api/auth/register",
      JSON.stringify({ username: name, password, role: "admin", id: 1, passwordHash: "$argon2id$fake", createdAt: "2000-01-01T00:00:00.000Z" }),
    );
    expect(res.status).toBe(201);
    const { user } = await res.json();
    expectAuthResult({ token: "", refreshToken: "", user }, name);
    expect(user.role).toBe("user");
    const [row] = await sql`SELECT role::text AS role, password_hash, created_at FROM users WHERE id = ${user.id}`;
    expect(row.role).toBe("user");
    expect(row.password_hash).not.toBe("$argon2id$fake");
    expect(new Date(row.created_at).getUTCFullYear()).toBeGreaterThan(2000);
  });

  test("the access token is an HS256 JWT with sub, username, role, sid of a stored session and a 900 s lifetime", async () => {
    const name = uniqueName("jwt");
    const before = Math.floor(Date.now() / 1000);
    const res = await register(name);
    const after = Math.floor(Date.now() / 1000);
    expect(res.status).toBe(201);
    const { token, user } = await res.json();
    const { header, payload } = decodeJwt(token);
    expect(header.alg).toBe("HS256");
    expect(payload.sub).toBe(String(user.id));
    expect(payload.username).toBe(name);
    expect(payload.role).toBe("user");
    expect(typeof payload.sid).toBe("string");
    expect(payload.exp - payload.iat).toBe(900);
    expect(payload.iat).toBeGreaterThanOrEqual(before - 1);
    expect(payload.iat).toBeLessThanOrEqual(after + 1);
    // Signed with JWT_SECRET, and only with it.
    expect(await verify(token, testJwtSecret, "HS256")).toMatchObject({ sub: String(user.id) });
    await expect(verify(token, `${testJwtSecret}-other`, "HS256")).rejects.toThrow();

    const sessions = await sql`SELECT user_id, revoked_at FROM sessions WHERE id::text = ${payload.sid}`;
    expect(sessions).toHaveLength(1);
    expect(sessions[0].user_id).toBe(user.id);
    expect(sessions[0].revoked_at).toBeNull();
  });

  test("the refresh token is opaque, long-lived and stored only as its SHA-256 hex hash", async () => {
    const name = uniqueName("refresh");
    const res = await register(name);
    expect(res.status).toBe(201);
    const { token, refreshToken, user } = await res.json();
    // Opaque: not a JWT, not the access token, and long enough to be unguessable.
    expect(refreshToken).not.toBe(token);
    expect(refreshToken.split(".").length).toBeLessThan(3);
    expect(refreshToken.length).toBeGreaterThanOrEqual(32);
    expect(refreshToken).not.toContain(String(name));

    const { payload } = decodeJwt(token);
    const [session] = await sql`SELECT s.user_id, t.token_hash, s.expires_at FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id WHERE s.id::text = ${payload.sid}`;
    expect(session.user_id).toBe(user.id);
    expect(session.token_hash).toBe(sha256Hex(refreshToken));
    expect(session.token_hash).toMatch(/^[0-9a-f]{64}$/);
    // Long-lived: default 30 days.
    const thirtyDays = 30 * 24 * 3600 * 1000;
    expect(Math.abs(new Date(session.expires_at).getTime() - (Date.now() + thirtyDays))).toBeLessThan(60_000);
    expect(await occurrencesInDatabase(refreshToken)).toBe(0);
  });

  test("two registrations get distinct refresh tokens and sessions", async () => {
    const a = await (await register(uniqueName("pair"))).json();
    const b = await (await register(uniqueName("pair"))).json();
    expect(a.refreshToken).not.toBe(b.refreshToken);
    expect(decodeJwt(a.token).payload.sid).not.toBe(decodeJwt(b.token).payload.sid);
  });
});

describe("POST /api/auth/login", () => {
  test("200 with the same shape, a new session and a new refresh token", async () => {
    const name = uniqueName("login");
    const registered = await (await register(name)).json();
    const res = await login(name);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBeTruthy();
    const body = await res.json();
    expectAuthResult(body, name);
    expect(body.user).toEqual(registered.user);
    expect(body.refreshToken).not.toBe(registered.refreshToken);

    const { header, payload } = decodeJwt(body.token);
    expect(header.alg).toBe("HS256");
    expect(payload.sub).toBe(String(registered.user.id));
    expect(payload.exp - payload.iat).toBe(900);
    expect(payload.sid).not.toBe(decodeJwt(registered.token).payload.sid);
    const [session] = await sql`SELECT s.user_id, t.token_hash FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id WHERE s.id::text = ${payload.sid}`;
    expect(session.user_id).toBe(registered.user.id);
    expect(session.token_hash).toBe(sha256Hex(body.refreshToken));
    expect(await occurrencesInDatabase(body.refreshToken)).toBe(0);
  });

  test("wrong password and unknown user get the identical 401 INVALID_CREDENTIALS body", async () => {
    const name = uniqueName("creds");
    expect((await register(name)).status).toBe(201);
    const sessionsBefore = (await sql`SELECT count(*)::int AS n FROM sessions`)[0].n;

    const wrong = await login(name, "not the right password");
    const wrongBody = await expectError(wrong, 401, "INVALID_CREDENTIALS");
    const unknown = await login(uniqueName("nobody"), "not the right password");
    const unknownBody = await expectError(unknown, 401, "INVALID_CREDENTIALS");
    expect(unknownBody).toEqual(wrongBody);
    // Also with the right password of another account.
    const unknownRightPw = await login(uniqueName("nobody"), password);
    expect(await expectError(unknownRightPw, 401, "INVALID_CREDENTIALS")).toEqual(wrongBody);

    const sessionsAfter = (await sql`SELECT count(*)::int AS n FROM sessions`)[0].n;
    expect(sessionsAfter).toBe(sessionsBefore);
  });

  test("the username matches case-insensitively and the answer carries the registered spelling", async () => {
    const name = uniqueName("CaseLogin");
    const registered = await (await register(name)).json();
    for (const variant of [name.toLowerCase(), name.toUpperCase()]) {
      const res = await login(variant);
      expect(res.status).toBe(200);
      const body = await res.json();
      expect(body.user).toEqual(registered.user);
      expect(body.user.username).toBe(name);
    }
  });
});

describe("Unicode usernames", () => {
  test("Cyrillic works: register and log in as Алиса", async () => {
    const res = await register("Алиса");
    expect(res.status).toBe(201);
    const body = await res.json();
    expectAuthResult(body, "Алиса");
    const [row] = await sql`SELECT username FROM users WHERE id = ${body.user.id}`;
    expect(row.username).toBe("Алиса");
    expect(decodeJwt(body.token).payload.username).toBe("Алиса");
    const loginRes = await login("Алиса");
    expect(loginRes.status).toBe(200);
    expect((await loginRes.json()).user).toEqual(body.user);
  });

  test("NFC: the decomposed spelling of a registered name is taken, and logs in to the composed account", async () => {
    const composed = "\u0419\u043e\u043a\u043e"; // "Йоко" with Й as one code point
    const decomposed = "\u0418\u0306\u043e\u043a\u043e"; // И + COMBINING BREVE
    expect(decomposed).not.toBe(composed);
    expect(decomposed.normalize("NFC")).toBe(composed);

    const first = await register(composed);
    expect(first.status).toBe(201);
    const { user } = await first.json();
    await expectError(await register(decomposed), 409, "USERNAME_TAKEN");
    expect(await rowsNamed(composed)).toBe(1);

    const res = await login(decomposed);
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.user.id).toBe(user.id);
    expect(body.user.username).toBe(composed);
  });

  test("NFC: a name registered decomposed is stored and returned composed", async () => {
    const composed = "\u0419\u0435\u043d\u0430"; // "Йена"
    const decomposed = composed.normalize("NFD");
    expect(decomposed).not.toBe(composed);
    const res = await register(decomposed);
    expect(res.status).toBe(201);
    const { user } = await res.json();
    expect(user.username).toBe(composed);
    const [row] = await sql`SELECT username FROM users WHERE id = ${user.id}`;
    expect(row.username).toBe(composed);
    await expectError(await register(composed), 409, "USERNAME_TAKEN");
  });

  test("surrounding whitespace is trimmed: ' bob ' is 'bob'", async () => {
    const name = uniqueName("bob");
    const res = await register(` ${name} `);
    expect(res.status).toBe(201);
    const { user } = await res.json();
    expect(user.username).toBe(name);
    const [row] = await sql`SELECT username FROM users WHERE id = ${user.id}`;
    expect(row.username).toBe(name);
    await expectError(await register(name), 409, "USERNAME_TAKEN");
    await expectError(await register(`\t${name}\n`), 409, "USERNAME_TAKEN");
    const loginRes = await login(name);
    expect(loginRes.status).toBe(200);
    expect((await loginRes.json()).user.id).toBe(user.id);
    expect((await login(`  ${name}  `)).status).toBe(200);
  });

  // Lengths count Unicode code points, not bytes or UTF-16 units.
  test.each([
    ["3 characters (minimum)", "a_b"],
    ["32 Latin characters (maximum)", "L".repeat(31) + "m"],
    ["32 Cyrillic letters", "Ж".repeat(32)],
    ["32 astral (non-BMP) letters", "\u{10330}".repeat(32)],
    ["digits, '_', '.', '-'", "x.y-z_9"],
    ["Greek and CJK letters", "Σοφία李"],
    ["Devanagari with its vowel signs (combining marks)", "अनिल_कुमार"],
    ["Thai with tone marks", "สมชาย"],
  ])("accepted: %s", async (_label, name) => {
    const res = await register(name);
    expect(res.status).toBe(201);
    const body = await res.json();
    expectAuthResult(body, name);
    expect(await rowsNamed(name)).toBe(1);
  });

  test.each([
    ["8 characters (minimum)", "12345678"],
    ["128 characters (maximum)", "p".repeat(128)],
    ["128 astral characters", "\u{1F600}".repeat(128)],
  ])("password accepted: %s", async (_label, pw) => {
    const name = uniqueName("pw");
    const res = await register(name, pw);
    expect(res.status).toBe(201);
    expect((await login(name, pw)).status).toBe(200);
  });
});

describe("case-insensitive uniqueness, enforced by the database", () => {
  test("'Alice' then 'alice' is 409 USERNAME_TAKEN", async () => {
    expect((await register("Alice")).status).toBe(201);
    const res = await register("alice");
    const { error } = await expectError(res, 409, "USERNAME_TAKEN");
    expect(error.details).toBeUndefined();
    await expectError(await register("ALICE"), 409, "USERNAME_TAKEN");
    expect(await rowsNamed("alice")).toBe(1);
  });

  test("Cyrillic case: 'Борис' then 'борис' / 'БОРИС' is 409 USERNAME_TAKEN", async () => {
    expect((await register("Борис")).status).toBe(201);
    await expectError(await register("борис"), 409, "USERNAME_TAKEN");
    await expectError(await register("БОРИС"), 409, "USERNAME_TAKEN");
    expect(await rowsNamed("борис")).toBe(1);
  });

  test("10 concurrent registrations of case variants of one new name: one 201, nine 409, one row", async () => {
    const base = uniqueName("racer");
    // Distinct case variants: flip the case of the first five letters by the bits of i.
    const variants = Array.from({ length: 10 }, (_, i) =>
      [...base].map((ch, j) => (j < 5 && (i >> j) & 1 ? ch.toUpperCase() : ch)).join(""),
    );
    expect(new Set(variants).size).toBe(10);
    const before = await userCount();

    const responses = await Promise.all(variants.map((v) => register(v)));
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    for (const res of responses) {
      if (res.status === 409) await expectError(res, 409, "USERNAME_TAKEN");
      else await res.body?.cancel();
    }

    expect(await userCount()).toBe(before + 1);
    expect(await rowsNamed(base)).toBe(1);
    const [row] = await sql`SELECT id, username_key FROM users WHERE lower(username) = ${base.toLowerCase()}`;
    const [keyed] = await sql`SELECT count(*)::int AS n FROM users WHERE username_key = ${row.username_key}`;
    expect(keyed.n).toBe(1);
    // The losers left no sessions behind.
    const [sessions] = await sql`SELECT count(*)::int AS n FROM sessions s LEFT JOIN users u ON u.id = s.user_id WHERE u.id IS NULL`;
    expect(sessions.n).toBe(0);
  });

  test("a raw SQL insert of a second row with an existing username_key is a unique violation", async () => {
    const name = uniqueName("Raw");
    const { user } = await (await register(name)).json();
    const [row] = await sql`SELECT username_key FROM users WHERE id = ${user.id}`;
    expect(typeof row.username_key).toBe("string");

    let error: any;
    try {
      await sql`INSERT INTO users (username, username_key, password_hash) VALUES (${name.toUpperCase()}, ${row.username_key}, ${"x"})`;
    } catch (e) {
      error = e;
    }
    expect(error).toBeDefined();
    expect(error.errno).toBe("23505");
    expect(String(error.constraint)).toContain("username_key");

    // Control: the same insert with a fresh key is accepted, so the failure above is the constraint.
    const fresh = uniqueName("rawfresh");
    const [inserted] = await sql`INSERT INTO users (username, username_key, password_hash) VALUES (${fresh}, ${fresh}, ${"x"}) RETURNING id`;
    expect(inserted.id).toBeGreaterThan(0);
    await sql`DELETE FROM users WHERE id = ${inserted.id}`;
  });
});

// ---------------------------------------------------------------------------------------------
// Bad inputs: every row must fail with the right status and code, and create no user.

interface BadRow {
  label: string;
  body: () => string;
  contentType?: string | null;
  status: number;
  code: string;
  /** For VALIDATION_FAILED: the fields `details` must name ("" = the body as a whole). */
  fields?: string[];
  /** What a login answers instead: a password outside the registration policy is just a wrong one there. */
  onLogin?: { status: number; code: string };
}

const ok = () => uniqueName("bad");
const wrongCredentials = { status: 401, code: "INVALID_CREDENTIALS" };
const json = (value: unknown) => () => JSON.stringify(value);

const badRows: BadRow[] = [
  { label: "not JSON ({bad)", body: () => "{bad", status: 400, code: "BAD_JSON" },
  { label: "truncated JSON", body: () => `{"username":"${ok()}","password":"${password}"`, status: 400, code: "BAD_JSON" },
  { label: "valid JSON sent as text/plain", body: json({ username: ok(), password }), contentType: "text/plain", status: 400, code: "BAD_JSON" },
  { label: "valid JSON sent form-encoded", body: json({ username: ok(), password }), contentType: "application/x-www-form-urlencoded", status: 400, code: "BAD_JSON" },
  { label: "valid JSON with no content type", body: json({ username: ok(), password }), contentType: null, status: 400, code: "BAD_JSON" },
  { label: "empty body with a JSON content type", body: () => "", status: 400, code: "BAD_JSON" },
  { label: "null", body: () => "null", status: 400, code: "VALIDATION_FAILED", fields: [""] },
  { label: "[]", body: () => "[]", status: 400, code: "VALIDATION_FAILED", fields: [""] },
  { label: "an array of credentials", body: json([{ username: ok(), password }]), status: 400, code: "VALIDATION_FAILED", fields: [""] },
  { label: "a string", body: () => '"alice"', status: 400, code: "VALIDATION_FAILED", fields: [""] },
  { label: "a number", body: () => "42", status: 400, code: "VALIDATION_FAILED", fields: [""] },
  { label: "{}", body: json({}), status: 400, code: "VALIDATION_FAILED", fields: ["username", "password"] },
  { label: "missing username", body: json({ password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "missing password", body: json({ username: ok() }), status: 400, code: "VALIDATION_FAILED", fields: ["password"] },
  { label: "username null", body: json({ username: null, password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username too short (2)", body: json({ username: "ab", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username 2 after trimming", body: json({ username: "  ab  ", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username only spaces", body: json({ username: "      ", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username too long (33 Latin)", body: json({ username: "L".repeat(33), password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username too long (33 Cyrillic)", body: json({ username: "Ж".repeat(33), password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username too long (33 astral)", body: json({ username: "\u{10330}".repeat(33), password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username with a space inside", body: json({ username: "bo b_x", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username starting with a combining mark", body: json({ username: "\u0301abc", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username with a letter carrying 4 combining marks", body: json({ username: "ab\u0301\u0302\u0303\u0304c", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "password with an unpaired surrogate", body: () => `{"username":"${ok()}","password":"abcdefgh\\ud800"}`, status: 400, code: "VALIDATION_FAILED", fields: ["password"], onLogin: wrongCredentials },
  { label: "password with a NUL", body: json({ username: ok(), password: "abcdefgh\u0000" }), status: 400, code: "VALIDATION_FAILED", fields: ["password"], onLogin: wrongCredentials },
  { label: "username with '@'", body: json({ username: "bob@example", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username with an emoji", body: json({ username: "bob\u{1F600}x", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username <script>", body: json({ username: "<script>", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username with a NUL", body: json({ username: "bob\u0000x", password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username as number", body: json({ username: 12345, password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username as object", body: json({ username: { name: "alice" }, password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "username as array", body: json({ username: ["alice"], password }), status: 400, code: "VALIDATION_FAILED", fields: ["username"] },
  { label: "password 7 characters", body: json({ username: ok(), password: "1234567" }), status: 400, code: "VALIDATION_FAILED", fields: ["password"], onLogin: wrongCredentials },
  { label: "password 129 characters", body: json({ username: ok(), password: "p".repeat(129) }), status: 400, code: "VALIDATION_FAILED", fields: ["password"] },
  { label: "password 5000 characters", body: json({ username: ok(), password: "p".repeat(5000) }), status: 400, code: "VALIDATION_FAILED", fields: ["password"] },
  { label: "password as number", body: json({ username: ok(), password: 12345678 }), status: 400, code: "VALIDATION_FAILED", fields: ["password"] },
  { label: "password null", body: json({ username: ok(), password: null }), status: 400, code: "VALIDATION_FAILED", fields: ["password"] },
  {
    label: "body over 64 KiB",
    body: json({ username: ok(), password, padding: "x".repeat(70 * 1024) }),
    status: 413,
    code: "PAYLOAD_TOO_LARGE",
  },
];

describe("a wrong password of any length a login accepts (1–128 characters) is INVALID_CREDENTIALS, never a hint of the policy", () => {
  const wrongPasswords: [string, string][] = [
    ["1 character", "x"],
    ["2 characters", "xy"],
    ["7 characters", "1234567"],
    ["8 characters", "12345678"],
    ["128 characters", "w".repeat(128)],
    ["128 astral characters", "\u{1F600}".repeat(128)],
    ["with a NUL", "abcdefgh\u0000"],
    ["only spaces", "        "],
  ];
  test.each(wrongPasswords)("%s → 401 INVALID_CREDENTIALS, as for a long wrong one", async (_label, wrong) => {
    const name = uniqueName("wrongpw");
    expect((await register(name)).status).toBe(201);
    await expectError(await login(name, wrong), 401, "INVALID_CREDENTIALS");
    expect((await login(name)).status).toBe(200);
  });
  test.each([
    ["empty", ""],
    ["129 characters", "w".repeat(129)],
  ])("%s → 400 VALIDATION_FAILED naming password", async (_label, bad) => {
    const { error } = await expectError(await login(uniqueName("wrongpw"), bad), 400, "VALIDATION_FAILED");
    expect(error.details?.map((d) => d.path)).toContain("password");
  });
});

describe.each(["/api/auth/register", "/api/auth/login"])("bad input to %s", (path) => {
  test.each(badRows.map((row) => [row.label, row] as const))("%s", async (_label, row) => {
    const body = row.body();
    const before = await userCount();
    const res = await post(path, body, row.contentType === undefined ? "application/json" : row.contentType);
    const expected = path === "/api/auth/login" && row.onLogin ? row.onLogin : row;
    const { error } = await expectError(res, expected.status, expected.code);
    if (expected.code === "VALIDATION_FAILED") {
      expect(error.details?.length).toBeGreaterThan(0);
      const paths = error.details!.map((d) => d.path);
      for (const field of row.fields ?? []) {
        if (field === "") continue;
        expect(paths).toContain(field);
      }
      // Details are about the fields of this body, nothing invented.
      for (const p of paths) expect(["username", "password", "(root)", ""]).toContain(p);
    } else {
      expect(error.details).toBeUndefined();
    }
    expect(await userCount()).toBe(before);
    const match = /"username":"([^"]+)"/.exec(body);
    if (match?.[1]) expect(await rowsNamed(match[1])).toBe(0);
  });

  test("a body over the limit without Content-Length (chunked) is 413 too", async () => {
    const before = await userCount();
    const payload = new TextEncoder().encode(JSON.stringify({ username: ok(), password, padding: "x".repeat(70 * 1024) }));
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < payload.length; i += 8192) controller.enqueue(payload.slice(i, i + 8192));
        controller.close();
      },
    });
    const res = await fetch(`${t.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: stream });
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
    expect(await userCount()).toBe(before);
  });
});

describe("prototype keys", () => {
  const cases: [string, (name: string) => string][] = [
    ["__proto__", (name) => `{"__proto__":{"x":1,"role":"admin"},"username":"${name}","password":"${password}"}`],
    ["constructor.prototype", (name) => `{"constructor":{"prototype":{"x":1}},"username":"${name}","password":"${password}"}`],
    ["__proto__ as username's sibling only", () => `{"__proto__":{"username":"proto_user","password":"${password}"}}`],
  ];

  test.each(cases)("%s does not crash the server or pollute prototypes", async (_label, makeBody) => {
    const name = uniqueName("proto");
    for (const path of ["/api/auth/register", "/api/auth/login"]) {
      const res = await post(path, makeBody(name));
      expect(res.status).toBeLessThan(500);
      if (res.status >= 400) {
        await expectError(res, res.status, ((await res.clone().json()) as Json).error.code);
      } else {
        const body = await res.json();
        expectAuthResult(body, name);
        expect(body.user.role).toBe("user");
      }
    }
    expect(({} as Record<string, unknown>).x).toBeUndefined();
    expect(({} as Record<string, unknown>).role).toBeUndefined();
    expect(await rowsNamed("proto_user")).toBe(0);
  });
});

describe("X-Request-Id", () => {
  test("is echoed when the client sends one, on success and on error", async () => {
    const ok201 = await post("/api/auth/register", JSON.stringify({ username: uniqueName("rid"), password }), "application/json", {
      "X-Request-Id": "client-req-123",
    });
    expect(ok201.status).toBe(201);
    expect(ok201.headers.get("x-request-id")).toBe("client-req-123");
    const bad = await post("/api/auth/login", "{bad", "application/json", { "X-Request-Id": "client-req-456" });
    await expectError(bad, 400, "BAD_JSON");
    expect(bad.headers.get("x-request-id")).toBe("client-req-456");
  });

  test("is generated, and differs per request, when the client sends none", async () => {
    const a = await post("/api/auth/login", "{bad");
    const b = await post("/api/auth/login", "{bad");
    await expectError(a, 400, "BAD_JSON");
    await expectError(b, 400, "BAD_JSON");
    expect(a.headers.get("x-request-id")).not.toBe(b.headers.get("x-request-id"));
  });

  test("is set on a 404 for an unknown auth route", async () => {
    await expectError(await post("/api/auth/nope", "{}"), 404, "NOT_FOUND");
  });
});
