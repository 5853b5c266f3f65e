import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { sign } from "hono/jwt";
import { expectError } from "./helpers/expect-error.ts";
import { startTestServer, testJwtSecret, uniqueName, type Json } from "./helpers/server.ts";
import { b64url, now } from "./helpers/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §0 and §2: GET /api/users (paged by id) and GET /api/users/me, both behind a bearer token.

const t = await startTestServer();
const sql = t.database.sql;

const caller = await t.register(uniqueName("caller"));
const callerSid: string = decodePayload(caller.token).sid;

type PublicUser = { id: number; username: string; role: string; createdAt: string };

function decodePayload(token: string): Json {
  return JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
}

function get(path: string, token: string | undefined = caller.token, headers: Record<string, string> = {}) {
  return fetch(`${t.url}${path}`, { headers: token === undefined ? headers : { authorization: `Bearer ${token}`, ...headers } });
}

async function getJson(path: string, token?: string): Promise<{ res: Response; body: Json; text: string }> {
  const res = await get(path, token);
  const text = await res.text();
  return { res, body: JSON.parse(text), text };
}

/** Every user object is exactly `{ id, username, role, createdAt }` with the stored values. */
async function expectPublicUsers(users: PublicUser[]) {
  const ids = users.map((u) => u.id);
  const rows: { id: number; username: string; role: string; created_at: Date }[] =
    ids.length === 0 ? [] : await sql`SELECT id, username, role::text AS role, created_at FROM users WHERE id IN ${sql(ids)}`;
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const user of users) {
    expect(Object.keys(user).sort()).toEqual(["createdAt", "id", "role", "username"]);
    const row = byId.get(user.id);
    expect(row).toBeDefined();
    expect(user).toEqual({ id: row!.id, username: row!.username, role: row!.role, createdAt: new Date(row!.created_at).toISOString() });
    expect(user.createdAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/);
  }
}

async function allIds(): Promise<number[]> {
  const rows: { id: number }[] = await sql`SELECT id FROM users ORDER BY id`;
  return rows.map((r) => r.id);
}

async function maxId(): Promise<number> {
  const [row] = await sql`SELECT coalesce(max(id), 0)::int AS id FROM users`;
  return row.id;
}

const linkPattern = /^<(\/api\/users\?after=(\d+)&limit=(\d+))>; rel="next"$/;

/** The `Link` header parsed, or null when absent. */
function nextLink(res: Response): { path: string; after: number; limit: number } | null {
  const link = res.headers.get("link");
  if (link === null) return null;
  const match = linkPattern.exec(link);
  if (!match) throw new Error(`malformed Link header: ${link}`);
  return { path: match[1]!, after: Number(match[2]), limit: Number(match[3]) };
}

/** Follows `Link` from `start` to the end; returns each page. */
async function walk(start: string): Promise<{ pages: PublicUser[][]; links: (string | null)[] }> {
  const pages: PublicUser[][] = [];
  const links: (string | null)[] = [];
  let path: string | null = start;
  for (let i = 0; path !== null; i++) {
    if (i > 10_000) throw new Error("Link never ends");
    const { res, body }: { res: Response; body: Json } = await getJson(path);
    expect(res.status).toBe(200);
    pages.push(body);
    const link = nextLink(res);
    links.push(res.headers.get("link"));
    path = link?.path ?? null;
  }
  return { pages, links };
}

/** Inserts users straight into the database (fixtures, not a mock), so paging has enough rows. */
async function insertUsers(n: number): Promise<number[]> {
  const tag = crypto.randomUUID().slice(0, 8);
  const rows: { id: number }[] = await sql`
    INSERT INTO users (username, username_key, password_hash)
    SELECT 'bulk_' || ${tag} || '_' || g, 'bulk_' || ${tag} || '_' || g, '$argon2id$v=19$m=65536,t=2,p=1$fixturefixture$fixture'
    FROM generate_series(1, ${n}::int) AS g
    RETURNING id`;
  return rows.map((r) => r.id).sort((a, b) => a - b);
}

/** Makes sure at least `n` users exist, so a test does not lean on rows another test made. */
async function ensureUsers(n: number): Promise<void> {
  const have = (await allIds()).length;
  if (have >= n) return;
  await insertUsers(n - have);
  // Written behind the service's back (as the CLI would): its cached list pages show them within a second.
  await Bun.sleep(1_050);
}

// ---------------------------------------------------------------------------------------------

describe("authentication on /api/users and /api/users/me", () => {
  const claims = (extra: Record<string, unknown> = {}) => ({
    sub: String(caller.user.id),
    username: caller.user.username,
    role: caller.user.role,
    sid: callerSid,
    iat: now(),
    exp: now() + 600,
    ...extra,
  });
  const without = (key: string) => {
    const c: Record<string, unknown> = claims();
    delete c[key];
    return c;
  };

  // Each row: the Authorization header to send (undefined = none).
  const rows: [string, () => Promise<string | undefined>][] = [
    ["no Authorization header", async () => undefined],
    ["empty Authorization header", async () => ""],
    ["'Bearer' alone", async () => "Bearer"],
    ["'Bearer ' and nothing", async () => "Bearer "],
    ["garbage token", async () => "Bearer garbage"],
    ["garbage without a scheme", async () => "garbage"],
    ["two-part token", async () => "Bearer abc.def"],
    ["three-part garbage", async () => "Bearer abc.def.ghi"],
    ["valid token without 'Bearer '", async () => caller.token],
    ["valid token with another scheme", async () => `Token ${caller.token}`],
    ["Basic credentials", async () => `Basic ${Buffer.from(`${caller.user.username}:x`).toString("base64")}`],
    ["valid token followed by junk", async () => `Bearer ${caller.token} junk`],
    ["two Bearer tokens", async () => `Bearer ${caller.token}, Bearer ${caller.token}`],
    ["signed with another secret", async () => `Bearer ${await sign(claims(), `${testJwtSecret}-not-the-one`, "HS256")}`],
    ["expired", async () => `Bearer ${await sign(claims({ iat: now() - 1000, exp: now() - 100 }), testJwtSecret, "HS256")}`],
    ["alg none, no signature", async () => `Bearer ${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims())}.`],
    [
      "alg none with the original signature",
      async () => {
        const [, , sig] = caller.token.split(".");
        return `Bearer ${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims())}.${sig}`;
      },
    ],
    ["HS512 with the right secret", async () => `Bearer ${await sign(claims(), testJwtSecret, "HS512")}`],
    [
      "payload tampered (role admin) with the original signature",
      async () => {
        const [h, p, s] = caller.token.split(".");
        const payload = JSON.parse(Buffer.from(p!, "base64url").toString("utf8"));
        return `Bearer ${h}.${b64url({ ...payload, role: "admin" })}.${s}`;
      },
    ],
    ["right secret, no sub", async () => `Bearer ${await sign(without("sub"), testJwtSecret, "HS256")}`],
    ["right secret, non-numeric sub", async () => `Bearer ${await sign(claims({ sub: "abc" }), testJwtSecret, "HS256")}`],
    ["right secret, no exp", async () => `Bearer ${await sign(without("exp"), testJwtSecret, "HS256")}`],
    ["right secret, unknown role", async () => `Bearer ${await sign(claims({ role: "root" }), testJwtSecret, "HS256")}`],
  ];

  describe.each(["/api/users", "/api/users/me"])("%s", (path) => {
    test.each(rows)("401 UNAUTHORIZED: %s", async (_label, header) => {
      const value = await header();
      const res = await fetch(`${t.url}${path}`, { headers: value === undefined ? {} : { authorization: value } });
      const { error } = await expectError(res, 401, "UNAUTHORIZED");
      expect(error.details).toBeUndefined();
      expect(res.headers.get("link")).toBeNull();
    });

    test("control: a token signed here with the same secret and valid claims is accepted", async () => {
      const token = await sign(claims(), testJwtSecret, "HS256");
      const res = await get(path, token);
      expect(res.status).toBe(200);
      await res.body?.cancel();
    });

    test("control: the issued token is accepted, with the scheme in any case", async () => {
      for (const scheme of ["Bearer", "bearer"]) {
        const res = await fetch(`${t.url}${path}`, { headers: { authorization: `${scheme} ${caller.token}` } });
        expect(res.status).toBe(200);
        expect(res.headers.get("x-request-id")).toBeTruthy();
        await res.body?.cancel();
      }
    });
  });
});

describe("GET /api/users", () => {
  test("200 with users ordered by id, each exactly { id, username, role, createdAt } as stored", async () => {
    const a = await t.register(uniqueName("list"));
    const b = await t.register(uniqueName("Лист"));
    const { res, body } = await getJson("/api/users?limit=1000");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(Array.isArray(body)).toBe(true);
    const ids = body.map((u: PublicUser) => u.id);
    expect(ids).toEqual([...ids].sort((x: number, y: number) => x - y));
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual((await allIds()).slice(0, 1000));
    expect(body).toContainEqual(a.user);
    expect(body).toContainEqual(b.user);
    expect(body).toContainEqual(caller.user);
    await expectPublicUsers(body);
  });

  test("limit defaults to 100, with a Link to the next page", async () => {
    await ensureUsers(150);
    const ids = await allIds();
    const { res, body } = await getJson("/api/users");
    expect(res.status).toBe(200);
    expect(body).toHaveLength(100);
    expect(body.map((u: PublicUser) => u.id)).toEqual(ids.slice(0, 100));
    expect(res.headers.get("link")).toBe(`</api/users?after=${ids[99]}&limit=100>; rel="next"`);
    await expectPublicUsers(body);
  });

  test("limit=1 and limit=1000 are the accepted bounds", async () => {
    await ensureUsers(2);
    const ids = await allIds();
    const one = await getJson("/api/users?limit=1");
    expect(one.res.status).toBe(200);
    expect(one.body.map((u: PublicUser) => u.id)).toEqual([ids[0]]);
    expect(one.res.headers.get("link")).toBe(`</api/users?after=${ids[0]}&limit=1>; rel="next"`);

    // Enough rows that 1000 is a real page, so a lower cap would show.
    await ensureUsers(1001);
    const all = await allIds();
    const max = await getJson("/api/users?limit=1000");
    expect(max.res.status).toBe(200);
    expect(max.body).toHaveLength(1000);
    expect(max.body.map((u: PublicUser) => u.id)).toEqual(all.slice(0, 1000));
    expect(max.res.headers.get("link")).toBe(`</api/users?after=${all[999]}&limit=1000>; rel="next"`);
  });

  test("7 new users paged by 3 after the previous last id: pages of 3, 3, 1; Link exactly while more remain", async () => {
    const start = await maxId();
    const created: PublicUser[] = [];
    for (let i = 0; i < 7; i++) created.push((await t.register(uniqueName("page"))).user);
    const createdIds = created.map((u) => u.id).sort((a, b) => a - b);
    expect(await maxId()).toBe(createdIds[6]!);

    const { pages, links } = await walk(`/api/users?after=${start}&limit=3`);
    expect(pages.map((p) => p.length)).toEqual([3, 3, 1]);
    expect(pages.flat().map((u) => u.id)).toEqual(createdIds);
    expect(links).toEqual([
      `</api/users?after=${createdIds[2]}&limit=3>; rel="next"`,
      `</api/users?after=${createdIds[5]}&limit=3>; rel="next"`,
      null,
    ]);
    for (const user of created) expect(pages.flat()).toContainEqual(user);
    await expectPublicUsers(pages.flat());
  });

  test("following Link from the first page walks every user exactly once, in id order", async () => {
    await ensureUsers(30);
    const expected = await allIds();
    const { pages, links } = await walk("/api/users?limit=7");
    const walked = pages.flat().map((u) => u.id);
    expect(walked).toEqual(expected);
    expect(new Set(walked).size).toBe(walked.length);
    // Every page but the last is full and has a Link; the last has none.
    for (const page of pages.slice(0, -1)) expect(page).toHaveLength(7);
    expect(pages.at(-1)!.length).toBeGreaterThan(0);
    expect(pages.at(-1)!.length).toBeLessThanOrEqual(7);
    expect(links.slice(0, -1).every((l) => l !== null)).toBe(true);
    expect(links.at(-1)).toBeNull();
  });

  test("no Link when the page holds exactly the last users", async () => {
    await ensureUsers(5);
    const ids = await allIds();
    const last3 = ids.slice(-3);
    const before = ids.at(-4)!;
    const exact = await getJson(`/api/users?after=${before}&limit=3`);
    expect(exact.res.status).toBe(200);
    expect(exact.body.map((u: PublicUser) => u.id)).toEqual(last3);
    expect(exact.res.headers.get("link")).toBeNull();

    const short = await getJson(`/api/users?after=${before}&limit=2`);
    expect(short.body.map((u: PublicUser) => u.id)).toEqual(last3.slice(0, 2));
    expect(nextLink(short.res)).toEqual({ path: `/api/users?after=${last3[1]}&limit=2`, after: last3[1]!, limit: 2 });

    const roomy = await getJson(`/api/users?after=${before}&limit=4`);
    expect(roomy.body.map((u: PublicUser) => u.id)).toEqual(last3);
    expect(roomy.res.headers.get("link")).toBeNull();
  });

  test("after the last id, or the largest id, is an empty page with no Link", async () => {
    for (const after of [await maxId(), 2_147_483_647]) {
      const { res, body } = await getJson(`/api/users?after=${after}`);
      expect(res.status).toBe(200);
      expect(body).toEqual([]);
      expect(res.headers.get("link")).toBeNull();
    }
  });

  test("after is exclusive and need not be an existing id", async () => {
    await ensureUsers(2);
    const ids = await allIds();
    const [first, second] = [ids[0]!, ids[1]!];
    const { body } = await getJson(`/api/users?after=${first}&limit=1`);
    expect(body.map((u: PublicUser) => u.id)).toEqual([second]);
    // A deleted id still works as a cursor, and a deleted row is skipped.
    const victim = await t.register(uniqueName("gone"));
    const next = await t.register(uniqueName("next"));
    await sql`DELETE FROM users WHERE id = ${victim.user.id}`;
    for (const cursor of [victim.user.id, victim.user.id - 1]) {
      const page = await getJson(`/api/users?after=${cursor}&limit=1`);
      expect(page.res.status).toBe(200);
      expect(page.body).toEqual([next.user]);
      expect(page.res.headers.get("link")).toBeNull();
    }
  });

  const badQueries: [string, string][] = [
    ["limit", "0"],
    ["limit", "1001"],
    ["limit", "-1"],
    ["limit", "abc"],
    ["limit", "1.5"],
    ["limit", "1e3"],
    ["limit", ""],
    ["limit", "99999999999"],
    ["after", "0"],
    ["after", "-5"],
    ["after", "abc"],
    ["after", "1.5"],
    ["after", "1e3"],
    ["after", "99999999999"],
    ["after", "2147483648"],
  ];

  test.each(badQueries)("400 VALIDATION_FAILED naming %s for %p", async (param, value) => {
    const res = await get(`/api/users?${param}=${encodeURIComponent(value)}`);
    const { error } = await expectError(res, 400, "VALIDATION_FAILED");
    expect(error.details?.length).toBeGreaterThan(0);
    expect(error.details!.map((d) => d.path)).toContain(param);
    expect(res.headers.get("link")).toBeNull();
  });

  test("both bad parameters are named at once", async () => {
    const { error } = await expectError(await get("/api/users?limit=0&after=x"), 400, "VALIDATION_FAILED");
    const paths = error.details!.map((d) => d.path);
    expect(paths).toContain("limit");
    expect(paths).toContain("after");
  });
});

describe("GET /api/users/me", () => {
  test("200 with the caller's own user, exactly as registration returned it", async () => {
    const { res, body } = await getJson("/api/users/me");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(body).toEqual(caller.user);
    await expectPublicUsers([body]);
  });

  test("each token gets its own user, including one from login", async () => {
    const other = await t.register(uniqueName("Другой"));
    const mine = await getJson("/api/users/me", other.token);
    expect(mine.body).toEqual(other.user);
    expect(mine.body.id).not.toBe(caller.user.id);

    const login = await fetch(`${t.url}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: other.user.username, password: "correct horse battery" }),
    });
    expect(login.status).toBe(200);
    const { token } = (await login.json()) as { token: string };
    expect((await getJson("/api/users/me", token)).body).toEqual(other.user);
  });

  test("a valid token whose user row was deleted is 401 UNAUTHORIZED", async () => {
    const doomed = await t.register(uniqueName("doomed"));
    expect((await get("/api/users/me", doomed.token)).status).toBe(200);
    await t.database.db.user.delete({ where: { id: doomed.user.id } });
    const { error } = await expectError(await get("/api/users/me", doomed.token), 401, "UNAUTHORIZED");
    expect(error.details).toBeUndefined();
  });
});

describe("no password hash leaves the server", () => {
  test("no user object in /api/users or /api/users/me carries password_hash or passwordHash", async () => {
    const someone = await t.register(uniqueName("secret"));
    const [row] = await sql`SELECT password_hash FROM users WHERE id = ${someone.user.id}`;
    expect(row.password_hash).toStartWith("$argon2id$");

    const texts: string[] = [];
    for (const path of ["/api/users?limit=1000", `/api/users?after=${someone.user.id - 1}&limit=1`, "/api/users/me"]) {
      const { res, text } = await getJson(path, someone.token);
      expect(res.status).toBe(200);
      texts.push(text);
    }
    const { pages } = await walk("/api/users?limit=1000");
    texts.push(JSON.stringify(pages));
    for (const text of texts) {
      expect(text).not.toMatch(/password/i);
      expect(text).not.toContain("$argon2");
      expect(text).not.toContain(row.password_hash);
      for (const user of JSON.parse(text).flat?.() ?? [JSON.parse(text)]) {
        expect(Object.keys(user).sort()).toEqual(["createdAt", "id", "role", "username"]);
      }
    }
  });
});
