import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { expectError } from "./helpers/expect-error.ts";
import { startTestServer, uniqueName, type Json, type Registered, type TestServer } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §7: the audit trail. What each audited act writes (every field), which address is
// recorded (X-Forwarded-For only as far as TRUST_PROXY says), GET /api/admin/audit (order,
// filters, paging, validation, admins only), and the table being append-only in the database.

const adminName = uniqueName("auditor");
const t = await startTestServer({ env: { ADMIN_USERNAMES: adminName } });
const sql = t.database.sql;
const admin = await t.register(adminName);
const password = "correct horse battery";
const peer = "127.0.0.1";

// ---------------------------------------------------------------------------------------------
// Helpers

type Row = { id: string; at: Date; actor_id: number | null; action: string; target_type: string | null; target_id: string | null; ip: string | null; meta: Json };
type Entry = { id: number; at: string; actorId: number | null; action: string; targetType: string | null; targetId: string | null; ip: string | null; meta: Json };

function post(path: string, body?: unknown, headers: Record<string, string> = {}, server: { url: string } = t): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: "POST",
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const login = (username: string, pw = password, headers: Record<string, string> = {}, server: { url: string } = t) =>
  post("/api/auth/login", { username, password: pw }, headers, server);
/** GET /api/admin/audit as the admin, or with `token` (null: no Authorization header). */
const getAudit = (query: string, token: string | null = admin.token) =>
  fetch(`${t.url}/api/admin/audit${query}`, { headers: token === null ? {} : bearer(token) });

async function maxId(): Promise<string> {
  const [row] = await sql`SELECT coalesce(max(id), 0)::text AS id FROM audit_log`;
  return row.id;
}

async function rowsSince(since: string): Promise<Row[]> {
  return sql`SELECT id::text AS id, at, actor_id, action, target_type, target_id, ip, meta FROM audit_log WHERE id > ${since}::bigint ORDER BY audit_log.id`;
}

/** The API's view of a stored row. */
const toEntry = (row: Row): Entry => ({
  id: Number(row.id),
  at: row.at.toISOString(),
  actorId: row.actor_id,
  action: row.action,
  targetType: row.target_type,
  targetId: row.target_id,
  ip: row.ip,
  meta: row.meta,
});

const sidOf = (token: string): string => JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")).sid;

type Expected = { actor_id: number | null; action: string; target_type: string | null; target_id: string | null; meta: Json; ip?: string };

/**
 * Exactly one row was written since `since`, with exactly these fields, a recent `at` and
 * (unless given) the peer address; and the admin API shows it, newest, field for field.
 */
async function expectOneRow(since: string, expected: Expected): Promise<Row> {
  const rows = await rowsSince(since);
  expect(rows).toEqual([{ id: expect.any(String), at: expect.any(Date), ip: peer, ...expected }]);
  const row = rows[0]!;
  expect(row.ip).not.toBeNull();
  expect(Math.abs(row.at.getTime() - Date.now())).toBeLessThan(10_000);
  const res = await getAudit("?limit=1");
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual([toEntry(row)]);
  return row;
}

async function register(prefix: string): Promise<Registered> {
  return t.register(uniqueName(prefix));
}

async function loggedIn(user: Registered): Promise<{ token: string; refreshToken: string }> {
  const res = await login(user.user.username);
  expect(res.status).toBe(200);
  return (await res.json()) as { token: string; refreshToken: string };
}

async function promote(user: Registered, role: "moderator" | "admin"): Promise<void> {
  const res = await fetch(`${t.url}/api/users/${user.user.id}`, {
    method: "PATCH",
    headers: { ...bearer(admin.token), "content-type": "application/json" },
    body: JSON.stringify({ role }),
  });
  expect(res.status).toBe(200);
}

// ---------------------------------------------------------------------------------------------

describe("each audited act writes one row with exactly these fields", () => {
  test("register: actor and target the new user, meta.role", async () => {
    const since = await maxId();
    const user = await register("Reg");
    await expectOneRow(since, { actor_id: user.user.id, action: "register", target_type: "user", target_id: String(user.user.id), meta: { role: "user" } });
  });

  test("register of a name in ADMIN_USERNAMES: meta.role is admin", async () => {
    const [row] = await sql`SELECT actor_id, action, target_type, target_id, ip, meta FROM audit_log WHERE action = 'register' AND actor_id = ${admin.user.id}`;
    expect(row).toEqual({ actor_id: admin.user.id, action: "register", target_type: "user", target_id: String(admin.user.id), ip: peer, meta: { role: "admin" } });
  });

  test("login: actor the user, target the new session", async () => {
    const user = await register("login");
    const since = await maxId();
    const session = await loggedIn(user);
    await expectOneRow(since, { actor_id: user.user.id, action: "login", target_type: "session", target_id: sidOf(session.token), meta: {} });
  });

  test("login_failed, known user (wrong password, name in another case): actor and target the user, meta.username folded", async () => {
    const user = await register("Fail");
    const since = await maxId();
    await expectError(await login(user.user.username.toUpperCase(), "not the password"), 401, "INVALID_CREDENTIALS");
    await expectOneRow(since, {
      actor_id: user.user.id,
      action: "login_failed",
      target_type: "user",
      target_id: String(user.user.id),
      meta: { username: user.user.username.toLowerCase() },
    });
  });

  test.each(["Незнакомец_QX", "  GHOST_Ünknown  ", "ÉCOLE.Nobody"])("login_failed, unknown user %p: no actor, no target, meta.username folded", async (typed) => {
    const name = `${typed.trim()}_${crypto.randomUUID().slice(0, 4)}`;
    const since = await maxId();
    await expectError(await login(typed.startsWith(" ") ? `  ${name}  ` : name), 401, "INVALID_CREDENTIALS");
    await expectOneRow(since, { actor_id: null, action: "login_failed", target_type: null, target_id: null, meta: { username: name.normalize("NFC").toLowerCase() } });
  });

  test("refresh: a successful rotation writes nothing; presenting the spent token again writes refresh_reuse", async () => {
    const user = await register("reuse");
    const since = await maxId();
    const first = await post("/api/auth/refresh", { refreshToken: user.refreshToken });
    expect(first.status).toBe(200);
    expect(await rowsSince(since)).toEqual([]);

    await expectError(await post("/api/auth/refresh", { refreshToken: user.refreshToken }), 401, "UNAUTHORIZED");
    await expectOneRow(since, { actor_id: user.user.id, action: "refresh_reuse", target_type: "session", target_id: sidOf(user.token), meta: {} });
  });

  test("logout: actor the user, target the session; an unknown token or a second logout writes nothing", async () => {
    const user = await register("logout");
    const second = await loggedIn(user);
    const since = await maxId();
    const res = await post("/api/auth/logout", { refreshToken: second.refreshToken });
    expect(res.status).toBe(204);
    await expectOneRow(since, { actor_id: user.user.id, action: "logout", target_type: "session", target_id: sidOf(second.token), meta: {} });

    const after = await maxId();
    expect((await post("/api/auth/logout", { refreshToken: "not-a-token-we-issued" })).status).toBe(204);
    // Logging out a session that is already over ends nothing, so it records nothing.
    expect((await post("/api/auth/logout", { refreshToken: second.refreshToken })).status).toBe(204);
    expect(await rowsSince(after)).toEqual([]);
  });

  test("logout_all: actor and target the user, meta.sessions the number ended", async () => {
    const user = await register("logoutall");
    await loggedIn(user);
    await loggedIn(user);
    const since = await maxId();
    const res = await post("/api/auth/logout-all", undefined, bearer(user.token));
    expect(res.status).toBe(204);
    await expectOneRow(since, { actor_id: user.user.id, action: "logout_all", target_type: "user", target_id: String(user.user.id), meta: { sessions: 3 } });
  });

  test("role_change: actor the admin, target the user, meta from/to", async () => {
    const user = await register("role");
    const since = await maxId();
    await promote(user, "moderator");
    await expectOneRow(since, { actor_id: admin.user.id, action: "role_change", target_type: "user", target_id: String(user.user.id), meta: { from: "user", to: "moderator" } });
  });

  test("ban with a reason, ban without one, unban: actor the moderator, target the user", async () => {
    const mod = await register("mod");
    await promote(mod, "moderator");
    const user = await register("banme");
    const call = (path: string, body?: unknown) => post(`/api/users/${user.user.id}/${path}`, body, bearer(mod.token));

    let since = await maxId();
    expect((await call("ban", { reason: "  spam, repeatedly " })).status).toBe(200);
    await expectOneRow(since, { actor_id: mod.user.id, action: "ban", target_type: "user", target_id: String(user.user.id), meta: { reason: "spam, repeatedly" } });

    since = await maxId();
    expect((await call("unban")).status).toBe(200);
    await expectOneRow(since, { actor_id: mod.user.id, action: "unban", target_type: "user", target_id: String(user.user.id), meta: {} });

    since = await maxId();
    expect((await call("ban")).status).toBe(200);
    await expectOneRow(since, { actor_id: mod.user.id, action: "ban", target_type: "user", target_id: String(user.user.id), meta: {} });
  });
});

describe("the recorded address", () => {
  /** A failed login for an unknown name (cheap and always audited) with these headers; returns the recorded ip. */
  async function recordedIp(server: TestServer, headers: Record<string, string>): Promise<string | null> {
    const since = await maxId();
    const res = await login(uniqueName("nobody"), password, headers, server);
    await expectError(res, 401, "INVALID_CREDENTIALS");
    const rows = await rowsSince(since);
    expect(rows.map((r) => r.action)).toEqual(["login_failed"]);
    return rows[0]!.ip;
  }

  // Each row: X-Forwarded-For (undefined = none) → the recorded ip for TRUST_PROXY 0, 1 and 2.
  const rows: [xff: string | undefined, trust0: string, trust1: string, trust2: string][] = [
    [undefined, peer, peer, peer],
    ["203.0.113.7", peer, "203.0.113.7", "203.0.113.7"],
    ["198.51.100.1, 203.0.113.9", peer, "203.0.113.9", "198.51.100.1"],
    ["198.51.100.1,203.0.113.9 , 10.0.0.1", peer, "10.0.0.1", "203.0.113.9"],
    ["2001:db8::1", peer, "2001:db8::1", "2001:db8::1"],
    ["198.51.100.1, not-an-address", peer, peer, "198.51.100.1"],
    ["", peer, peer, peer],
  ];

  // One server per TRUST_PROXY value, all on this file's database.
  const servers: Record<0 | 1 | 2, Promise<TestServer>> = {
    0: Promise.resolve(t),
    1: startTestServer({ database: t.database, env: { TRUST_PROXY: "1" } }),
    2: startTestServer({ database: t.database, env: { TRUST_PROXY: "2" } }),
  };

  test.each(rows)("X-Forwarded-For %p → %p (TRUST_PROXY=0), %p (=1), %p (=2)", async (xff, ...expected) => {
    const headers: Record<string, string> = xff === undefined ? {} : { "x-forwarded-for": xff };
    for (const trust of [0, 1, 2] as const) {
      expect({ trust, ip: await recordedIp(await servers[trust], headers) }).toEqual({ trust, ip: expected[trust] });
    }
  });

  test("the default (TRUST_PROXY unset) ignores the header on every audited route", async () => {
    const headers = { "x-forwarded-for": "203.0.113.66" };
    const since = await maxId();
    const res = await fetch(`${t.url}/api/auth/register`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ username: uniqueName("xff"), password }),
    });
    expect(res.status).toBe(201);
    const user = (await res.json()) as Registered;
    expect((await login(user.user.username, password, headers)).status).toBe(200);
    expect((await post("/api/auth/logout-all", undefined, { ...bearer(user.token), ...headers })).status).toBe(204);
    const rows = await rowsSince(since);
    expect(rows.map((r) => [r.action, r.ip])).toEqual([
      ["register", peer],
      ["login", peer],
      ["logout_all", peer],
    ]);
  });
});

describe("GET /api/admin/audit", () => {
  /** Fixture rows (INSERT is allowed; only changes are refused) so paging and filters have plenty to work on. */
  const fixtureActors = [900_001, 900_002];
  beforeAll(async () => {
    await sql`
      INSERT INTO audit_log (actor_id, action, target_type, target_id, ip, meta)
      SELECT CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN 900001 ELSE 900002 END,
             CASE WHEN g % 4 = 0 THEN 'message_delete' ELSE 'message_edit' END,
             'message', g::text, '192.0.2.' || (g % 250), jsonb_build_object('n', g)
      FROM generate_series(1, 260) AS g`;
  });

  /** What the API should answer for these filters, straight from the table, newest first. */
  async function expected({ action, actorId, before, limit }: { action?: string; actorId?: number; before?: number; limit?: number }): Promise<Entry[]> {
    const rows: Row[] = await sql`
      SELECT id::text AS id, at, actor_id, action, target_type, target_id, ip, meta FROM audit_log
      WHERE (${action ?? null}::text IS NULL OR action = ${action ?? null})
        AND (${actorId ?? null}::int IS NULL OR actor_id = ${actorId ?? null})
        AND (${before ?? null}::bigint IS NULL OR id < ${before ?? null})
      ORDER BY audit_log.id DESC
      LIMIT ${limit ?? 1_000_000}`;
    return rows.map(toEntry);
  }

  async function page(query: string): Promise<Entry[]> {
    const res = await getAudit(query);
    const text = await res.text();
    expect({ status: res.status, text }).toMatchObject({ status: 200 });
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const body = JSON.parse(text) as Entry[];
    for (const entry of body) {
      expect(Object.keys(entry).sort()).toEqual(["action", "actorId", "at", "id", "ip", "meta", "targetId", "targetType"]);
      expect(Number.isInteger(entry.id)).toBe(true);
      expect(new Date(entry.at).toISOString()).toBe(entry.at);
    }
    const ids = body.map((e) => e.id);
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    expect(new Set(ids).size).toBe(ids.length);
    return body;
  }

  /** Follows `before` from the first page until a short page; every page full but the last. */
  async function walk(filter: string, limit: number): Promise<Entry[]> {
    const all: Entry[] = [];
    for (let query = `?${filter}&limit=${limit}`, i = 0; ; i++) {
      if (i > 10_000) throw new Error("paging never ends");
      const entries = await page(query);
      all.push(...entries);
      if (entries.length < limit) return all;
      query = `?${filter}&limit=${limit}&before=${entries.at(-1)!.id}`;
    }
  }

  test("newest first, 50 by default, each entry exactly as stored", async () => {
    const body = await page("");
    expect(body).toHaveLength(50);
    expect(body).toEqual(await expected({ limit: 50 }));
    expect(body[0]!.id).toBe(Number(await maxId()));
  });

  test("a new act is the first entry at once", async () => {
    const user = await register("newest");
    const [first] = await page("?limit=1");
    expect(first).toMatchObject({ actorId: user.user.id, action: "register", targetType: "user", targetId: String(user.user.id), ip: peer, meta: { role: "user" } });
  });

  test.each([1, 2, 199, 200])("limit=%p returns that many, the newest", async (limit) => {
    const body = await page(`?limit=${limit}`);
    expect(body).toHaveLength(limit);
    expect(body).toEqual(await expected({ limit }));
  });

  // Each row: the filter query → what it selects.
  const filters: [query: string, filter: { action?: string; actorId?: number }][] = [
    ["action=message_delete", { action: "message_delete" }],
    ["action=register", { action: "register" }],
    ["action=login_failed", { action: "login_failed" }],
    [`actorId=${fixtureActors[0]}`, { actorId: fixtureActors[0] }],
    [`actorId=${fixtureActors[1]}&action=message_edit`, { actorId: fixtureActors[1], action: "message_edit" }],
  ];

  test.each(filters)("?%s: only matching entries, newest first", async (query, filter) => {
    const all = await expected(filter);
    expect(all.length).toBeGreaterThan(0);
    const body = await page(`?${query}&limit=200`);
    expect(body).toEqual(all.slice(0, 200));
    for (const entry of body) {
      if (filter.action) expect(entry.action).toBe(filter.action);
      if (filter.actorId) expect(entry.actorId).toBe(filter.actorId);
    }
  });

  test("?actorId= of the admin: their own acts only", async () => {
    const user = await register("byadmin");
    await promote(user, "moderator");
    const body = await page(`?actorId=${admin.user.id}`);
    expect(body[0]).toMatchObject({ actorId: admin.user.id, action: "role_change", targetId: String(user.user.id) });
    expect(body).toEqual(await expected({ actorId: admin.user.id, limit: 50 }));
  });

  test.each([
    ["", 7],
    ["", 200],
    [`actorId=${900_002}`, 9],
    ["action=message_delete", 10],
    [`actorId=${900_001}&action=message_edit`, 13],
  ] as const)("paging back with before (filter %p, limit %p) visits every entry exactly once, in order", async (filter, limit) => {
    const all = await expected(filter ? Object.fromEntries(new URLSearchParams(filter).entries().map(([k, v]) => [k, k === "actorId" ? Number(v) : v])) : {});
    const walked = await walk(filter, limit);
    expect(walked.map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(walked).toEqual(all);
  });

  test("before is exclusive and need not be an existing id", async () => {
    const [newest, second] = await page("?limit=2");
    expect(await page(`?before=${newest!.id}&limit=1`)).toEqual([second!]);
    expect(await page(`?before=${newest!.id + 1}&limit=1`)).toEqual([newest!]);
    expect(await page(`?before=2147483647&limit=3`)).toEqual(await expected({ limit: 3 }));
    expect(await page("?before=1")).toEqual([]);
  });

  test("an action nobody performed: an empty list", async () => {
    expect(await page("?action=never_happened")).toEqual([]);
    expect(await page("?actorId=2147483647")).toEqual([]);
  });

  const badQueries: [param: string, value: string][] = [
    ["limit", "0"],
    ["limit", "201"],
    ["limit", "abc"],
    ["limit", "-1"],
    ["limit", "1.5"],
    ["limit", ""],
    ["actorId", "abc"],
    ["actorId", "0"],
    ["actorId", "-1"],
    ["actorId", "1e3"],
    ["actorId", "2147483648"],
    ["action", "DROP TABLE"],
    ["action", "DROP TABLE audit_log;--"],
    ["action", "LOGIN"],
    ["action", "login'"],
    ["action", "a".repeat(33)],
    ["action", ""],
    ["before", "0"],
    ["before", "abc"],
    ["before", "-1"],
    ["before", "2147483648"],
  ];

  test.each(badQueries)("400 VALIDATION_FAILED naming %s for %p", async (param, value) => {
    const since = await maxId();
    const res = await getAudit(`?${param}=${encodeURIComponent(value)}`);
    const { error } = await expectError(res, 400, "VALIDATION_FAILED", param);
    expect(error.details!.map((d) => d.path)).toEqual([param]);
    expect(await rowsSince(since)).toEqual([]);
  });

  const nonAdmins: [label: string, token: () => Promise<string | null>, status: number, code: string][] = [
    ["a user", async () => (await register("plain")).token, 403, "FORBIDDEN"],
    [
      "a moderator",
      async () => {
        const mod = await register("moder");
        await promote(mod, "moderator");
        return mod.token;
      },
      403,
      "FORBIDDEN",
    ],
    [
      "a demoted admin, with the token issued while admin",
      async () => {
        const former = await register("former");
        await promote(former, "admin");
        const { token } = await loggedIn(former);
        const res = await fetch(`${t.url}/api/users/${former.user.id}`, {
          method: "PATCH",
          headers: { ...bearer(admin.token), "content-type": "application/json" },
          body: JSON.stringify({ role: "user" }),
        });
        expect(res.status).toBe(200);
        return token;
      },
      403,
      "FORBIDDEN",
    ],
    ["no token", async () => null, 401, "UNAUTHORIZED"],
    ["a garbage token", async () => "not.a.jwt", 401, "UNAUTHORIZED"],
  ];

  test.each(nonAdmins)("%s: refused, with or without a query, and nothing written", async (_label, token, status, code) => {
    const caller = await token();
    for (const query of ["", "?limit=1", "?action=login", "?limit=0"]) {
      const since = await maxId();
      const { error } = await expectError(await getAudit(query, caller), status, code);
      expect(error.details).toBeUndefined();
      expect(await rowsSince(since)).toEqual([]);
    }
  });
});

describe("append-only in the database", () => {
  const snapshot = () => sql`SELECT id::text AS id, at, actor_id, action, target_type, target_id, ip, meta::text AS meta FROM audit_log ORDER BY audit_log.id`;

  const statements: [label: string, statement: string][] = [
    ["UPDATE of the newest row", "UPDATE audit_log SET action = 'tampered' WHERE id = (SELECT max(id) FROM audit_log)"],
    ["UPDATE of every row", "UPDATE audit_log SET ip = NULL, meta = '{}'"],
    ["UPDATE to the same values", "UPDATE audit_log SET action = action"],
    ["DELETE of the oldest row", "DELETE FROM audit_log WHERE id = (SELECT min(id) FROM audit_log)"],
    ["DELETE of every row", "DELETE FROM audit_log"],
    ["TRUNCATE", "TRUNCATE audit_log"],
    ["TRUNCATE ... RESTART IDENTITY CASCADE", "TRUNCATE TABLE audit_log RESTART IDENTITY CASCADE"],
  ];

  test.each(statements)("%s fails with 'audit_log is append-only'; the rows are unchanged", async (_label, statement) => {
    const before = await snapshot();
    expect(before.length).toBeGreaterThan(0);
    await expect(sql.unsafe(statement)).rejects.toThrow("audit_log is append-only");
    expect(await snapshot()).toEqual(before);
  });

  test("inside a transaction too: the statement fails and nothing commits", async () => {
    const before = await snapshot();
    await expect(
      sql.begin(async (tx) => {
        await tx`INSERT INTO audit_log (action, meta) VALUES ('message_edit', '{}')`;
        await tx`DELETE FROM audit_log WHERE action = 'message_edit'`;
      }),
    ).rejects.toThrow("audit_log is append-only");
    expect(await snapshot()).toEqual(before);
  });

  test("through the service's own Prisma client as well", async () => {
    const before = await snapshot();
    const db = t.database.db;
    const [newest] = await db.auditEntry.findMany({ orderBy: { id: "desc" }, take: 1 });
    // Prisma's promises are lazy thenables; Promise.resolve runs them.
    await expect(Promise.resolve(db.auditEntry.update({ where: { id: newest!.id }, data: { action: "tampered" } }))).rejects.toThrow("audit_log is append-only");
    await expect(Promise.resolve(db.auditEntry.deleteMany({}))).rejects.toThrow("audit_log is append-only");
    expect(await snapshot()).toEqual(before);
  });

  test("appending still works, and the new row is listed", async () => {
    const since = await maxId();
    const user = await register("append");
    await expectOneRow(since, { actor_id: user.user.id, action: "register", target_type: "user", target_id: String(user.user.id), meta: { role: "user" } });
  });
});
