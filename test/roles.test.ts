import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createTestDatabase } from "./helpers/db.ts";
import { expectError } from "./helpers/expect-error.ts";
import { productionEnv, projectRoot, startServerProcess } from "./helpers/process.ts";
import { startTestServer, transports, uniqueName, type ChatClient, type Json, type Registered } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { socketTracker } from "./helpers/sockets.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §0 and §7: roles (ADMIN_USERNAMES, `bun run user:role`, PATCH /api/users/:id) and
// bans (POST /api/users/:id/ban and /unban), with their audit rows. Every refused row checks
// status and code and that nothing changed: no role, ban or session touched, no audit row added.

const rootName = "Root";
const otherAdminName = "другой";
const t = await startTestServer({ env: { ADMIN_USERNAMES: `${rootName},${otherAdminName}` } });
const sql = t.database.sql;
const password = "correct horse battery";
const peer = "127.0.0.1";

// Listed names register as admins when spelled exactly as listed (other cases of them are refused).
const root = await t.register(rootName);
const otherAdmin = await t.register(otherAdminName);

type PublicUser = Registered["user"];
type Role = "user" | "moderator" | "admin";

// ---------------------------------------------------------------------------------------------
// Helpers

const NO_BODY = Symbol("no body");

/** A request with an optional bearer token; `body` is JSON-encoded unless a string or NO_BODY. */
function call(method: string, path: string, token: string | undefined, body: unknown = NO_BODY, server: { url: string } = t): Promise<Response> {
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  let payload: string | undefined;
  if (body !== NO_BODY) {
    headers["content-type"] = "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  return fetch(`${server.url}${path}`, { method, headers, body: payload });
}

const setRole = (token: string | undefined, id: number | string, body: unknown) => call("PATCH", `/api/users/${id}`, token, body);
const ban = (token: string | undefined, id: number | string, body: unknown = NO_BODY) => call("POST", `/api/users/${id}/ban`, token, body);
const unban = (token: string | undefined, id: number | string) => call("POST", `/api/users/${id}/unban`, token);
const login = (username: string, pw = password) => call("POST", "/api/auth/login", undefined, { username, password: pw });
const refresh = (refreshToken: string) => call("POST", "/api/auth/refresh", undefined, { refreshToken });
const me = (token: string) => call("GET", "/api/users/me", token);

/** A fresh user with `role` (set by root over the API, as an admin would). */
async function makeUser(role: Role = "user", prefix: string = role): Promise<Registered> {
  const user = await t.register(uniqueName(prefix));
  if (role !== "user") {
    const res = await setRole(root.token, user.user.id, { role });
    expect(res.status).toBe(200);
    user.user = { ...user.user, role };
  }
  return user;
}

/** Everything a refused request must leave alone. */
async function snapshot() {
  const users = await sql`SELECT id, role::text AS role, banned_at, ban_reason FROM users ORDER BY id`;
  const sessions = await sql`SELECT id, revoked_at, revoked_reason FROM sessions ORDER BY id`;
  const audit = await sql`SELECT id::text AS id FROM audit_log ORDER BY audit_log.id`;
  return { users, sessions, audit };
}

async function maxAuditId(): Promise<bigint> {
  const [row] = await sql`SELECT coalesce(max(id), 0)::text AS id FROM audit_log`;
  return BigInt(row.id);
}

/** Audit rows written after `since`, oldest first, as stored. */
async function auditSince(since: bigint) {
  return sql`SELECT actor_id, action, target_type, target_id, ip, meta FROM audit_log WHERE id > ${since.toString()}::bigint ORDER BY id`;
}

async function userRow(id: number) {
  const [row] = await sql`SELECT id, username, role::text AS role, banned_at, ban_reason, created_at FROM users WHERE id = ${id}`;
  return row as { id: number; username: string; role: Role; banned_at: Date | null; ban_reason: string | null; created_at: Date };
}

/** The response body is exactly `{ id, username, role, createdAt }` and agrees with the stored row. */
async function expectPublicUser(res: Response, expected: PublicUser): Promise<PublicUser> {
  expect(res.status).toBe(200);
  const body = (await res.json()) as PublicUser;
  expect(Object.keys(body).sort()).toEqual(["createdAt", "id", "role", "username"]);
  expect(body).toEqual(expected);
  const row = await userRow(body.id);
  expect<PublicUser>({ id: row.id, username: row.username, role: row.role, createdAt: row.created_at.toISOString() }).toEqual(body);
  return body;
}

const sidOf = (token: string): string => JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")).sid;

/** Sockets opened by one test, closed after it. */
const { connect } = socketTracker(t);

/** Resolves with the disconnect reason and when it came; rejects after `ms`. */
function disconnected(socket: ChatClient, ms = 5_000): Promise<{ reason: string; at: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket not disconnected within ${ms} ms`)), ms);
    socket.once("disconnect", (reason) => {
      clearTimeout(timer);
      resolve({ reason, at: performance.now() });
    });
  });
}

/**
 * The PostgreSQL server is shared with other test runs; when they hold every connection
 * slot, a new process cannot connect. That says nothing about the code under test, so a
 * child that failed only for that reason is started again (a few times, after a pause).
 */
const serverFull = /TooManyConnections|too many clients|remaining connection slots/i;
async function retryWhileServerFull<T>(run: () => Promise<T>, full: (result: T | Error) => boolean): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    let result: T | Error;
    try {
      result = await run();
    } catch (error) {
      result = error as Error;
    }
    if (attempt >= 5 || !full(result)) {
      if (result instanceof Error) throw result;
      return result;
    }
    await Bun.sleep(500 * attempt);
  }
}

const startServer = (env: Record<string, string>) =>
  retryWhileServerFull(
    () => startServerProcess(env),
    (r) => r instanceof Error && serverFull.test(r.message),
  );

/** Runs `bun run user:role ...args` as the operator would, with only PATH and DATABASE_URL. */
function userRoleCli(args: string[], databaseUrl: string) {
  return retryWhileServerFull(
    () => userRoleCliOnce(args, databaseUrl),
    (r) => !(r instanceof Error) && r.code !== 0 && serverFull.test(r.stderr),
  );
}

async function userRoleCliOnce(args: string[], databaseUrl: string) {
  const proc = Bun.spawn([process.execPath, "run", "user:role", ...args], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? "", DATABASE_URL: databaseUrl },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  clearTimeout(timer);
  // `bun run` echoes the script it runs ("$ bun scripts/user-role.ts ...") on stderr; the rest is the script's.
  return { code, stdout, stderr: stderr.replace(/^\$ bun scripts\/user-role\.ts.*\n/, "") };
}

// ---------------------------------------------------------------------------------------------

describe("bootstrap: ADMIN_USERNAMES", () => {
  test("at registration: listed names (exactly as listed, any script) register as admin, with an admin token", async () => {
    for (const [user, name] of [
      [root, rootName],
      [otherAdmin, otherAdminName],
    ] as const) {
      expect(user.user).toEqual({ id: expect.any(Number), username: name, role: "admin", createdAt: expect.any(String) });
      expect((await userRow(user.user.id)).role).toBe("admin");
      expect(JSON.parse(Buffer.from(user.token.split(".")[1]!, "base64url").toString("utf8")).role).toBe("admin");
      // The token really is an admin's: the admin-only audit trail answers.
      const res = await call("GET", "/api/admin/audit?limit=1", user.token);
      expect(res.status).toBe(200);
      await res.body?.cancel();
      const [row] = await sql`SELECT actor_id, action, target_type, target_id, meta FROM audit_log WHERE action = 'register' AND actor_id = ${user.user.id}`;
      expect(row).toEqual({ actor_id: user.user.id, action: "register", target_type: "user", target_id: String(user.user.id), meta: { role: "admin" } });
    }
  });

  // Names near the listed ones are ordinary users: no prefix, suffix or substring match.
  test.each(["Root_", "roo", "xroot", "другой1", "другои", "admin", "Root.2"])("%p registers as a user", async (name) => {
    const user = await t.register(name);
    expect(user.user.role).toBe("user");
    expect((await userRow(user.user.id)).role).toBe("user");
    const res = await call("GET", "/api/admin/audit?limit=1", user.token);
    await expectError(res, 403, "FORBIDDEN");
  });

  test("the listed name in another case is the same account: it cannot be registered twice", async () => {
    for (const name of ["ROOT", "root", "Root", "ДРУГОЙ", "другой"]) {
      const res = await call("POST", "/api/auth/register", undefined, { username: name, password });
      await expectError(res, 409, "USERNAME_TAKEN");
    }
  });

  test("at start-up (the real entry point): an existing user is promoted and audited with no actor; restarting does not audit again", async () => {
    const database = await createTestDatabase();
    // Users made by the app itself over the same database, before the process starts.
    const seed = await startTestServer({ database });
    const boss = await seed.register(uniqueName("Boss"));
    const mod = await seed.register(uniqueName("mod"));
    const bystander = await seed.register(uniqueName("bystander"));
    const seedAdmin = await startTestServer({ database, env: { ADMIN_USERNAMES: "seed_admin" } });
    const admin = await seedAdmin.register("seed_admin");
    expect((await call("PATCH", `/api/users/${mod.user.id}`, admin.token, { role: "moderator" }, seed)).status).toBe(200);
    await seed.stop();
    await seedAdmin.stop();

    const dbSql = database.sql;
    const roleOf = async (id: number) => ((await dbSql`SELECT role::text AS role FROM users WHERE id = ${id}`)[0] as { role: string }).role;
    const [{ id: since }] = await dbSql`SELECT coalesce(max(id), 0)::text AS id FROM audit_log`;
    expect(await roleOf(boss.user.id)).toBe("user");

    // Padded, with an unknown name, an existing admin, and the bystander in another case (only an
    // exact name is promoted: another case of it is not that account's name as listed).
    const list = ` ${boss.user.username} ,${mod.user.username}, nobody_${crypto.randomUUID().slice(0, 6)},seed_admin,${bystander.user.username.toUpperCase()}`;
    const server = await startServer(productionEnv(database.url, { ADMIN_USERNAMES: list }));
    let rows: Json[];
    try {
      expect(await roleOf(boss.user.id)).toBe("admin");
      expect(await roleOf(mod.user.id)).toBe("admin");
      expect(await roleOf(bystander.user.id)).toBe("user");
      expect(await roleOf(admin.user.id)).toBe("admin");
      rows = await dbSql`SELECT actor_id, action, target_type, target_id, ip, meta FROM audit_log WHERE id > ${since}::bigint ORDER BY target_id::int`;
      expect(rows).toEqual(
        [
          { actor_id: null, action: "role_change", target_type: "user", target_id: String(boss.user.id), ip: null, meta: { from: "user", to: "admin", via: "ADMIN_USERNAMES" } },
          { actor_id: null, action: "role_change", target_type: "user", target_id: String(mod.user.id), ip: null, meta: { from: "moderator", to: "admin", via: "ADMIN_USERNAMES" } },
        ].sort((a, b) => Number(a.target_id) - Number(b.target_id)),
      );
      const logged = await server.waitForLog((l) => l.msg === "granted admin from ADMIN_USERNAMES");
      expect(((logged.admins as string[]) ?? []).sort()).toEqual([boss.user.username, mod.user.username].sort());
      const warned = await server.waitForLog((l) => l.msg === "ADMIN_USERNAMES: an account looks like a listed name but is not it; not promoted");
      expect(warned).toMatchObject({ listed: bystander.user.username.toUpperCase(), account: bystander.user.username, userId: bystander.user.id, role: "user" });

      // The promoted account acts as an admin on the running server, with a fresh login.
      const signIn = await call("POST", "/api/auth/login", undefined, { username: boss.user.username, password }, server);
      expect(signIn.status).toBe(200);
      const { token, user } = (await signIn.json()) as { token: string; user: PublicUser };
      expect(user.role).toBe("admin");
      const audit = await call("GET", "/api/admin/audit?action=role_change", token, NO_BODY, server);
      expect(audit.status).toBe(200);
      const entries = (await audit.json()) as Json[];
      expect(entries.filter((e) => e.meta.via === "ADMIN_USERNAMES").map((e) => e.targetId).sort()).toEqual(rows.map((r) => r.target_id).sort());
    } finally {
      expect((await server.stop()).code).toBe(0);
    }

    // Already admins: a restart with the same list changes nothing and writes no audit row.
    const [{ id: afterFirst }] = await dbSql`SELECT coalesce(max(id), 0)::text AS id FROM audit_log`;
    const again = await startServer(productionEnv(database.url, { ADMIN_USERNAMES: list }));
    try {
      expect(await dbSql`SELECT id FROM audit_log WHERE id > ${afterFirst}::bigint`).toEqual([]);
      expect(again.logs.some((l) => l.msg === "granted admin from ADMIN_USERNAMES")).toBe(false);
    } finally {
      expect((await again.stop()).code).toBe(0);
    }
  }, 60_000);
});

describe("bootstrap: bun run user:role <username> <role>", () => {
  test("sets the role (username in any case), audits it with via cli and no actor; the same role again is a no-op", async () => {
    const target = await t.register(uniqueName("cli"));
    const since = await maxAuditId();
    const run = await userRoleCli([target.user.username.toUpperCase(), "moderator"], t.database.url);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    expect(run.stdout.trim()).toBe(`${target.user.username}: user → moderator`);
    expect((await userRow(target.user.id)).role).toBe("moderator");
    expect(await auditSince(since)).toEqual([
      { actor_id: null, action: "role_change", target_type: "user", target_id: String(target.user.id), ip: null, meta: { from: "user", to: "moderator", via: "cli" } },
    ]);

    const sinceAgain = await maxAuditId();
    const same = await userRoleCli([target.user.username, "moderator"], t.database.url);
    expect(same.code).toBe(0);
    expect(same.stdout.trim()).toBe(`${target.user.username} is already moderator`);
    expect(await auditSince(sinceAgain)).toEqual([]);

    // And back down, so a demotion is the same path.
    const down = await userRoleCli([target.user.username, "user"], t.database.url);
    expect(down.code).toBe(0);
    expect((await userRow(target.user.id)).role).toBe("user");
    expect(await auditSince(sinceAgain)).toEqual([
      { actor_id: null, action: "role_change", target_type: "user", target_id: String(target.user.id), ip: null, meta: { from: "moderator", to: "user", via: "cli" } },
    ]);
  }, 60_000);

  test("a name that only folds to an account's (ſ for s) does not change it: exit 1, the account's code points on stderr", async () => {
    const suffix = crypto.randomUUID().slice(0, 6);
    // Stored before names were reserved: its folded key is the typed name's.
    const [{ id }] = await sql`INSERT INTO users (username, username_key, password_hash) VALUES (${`\u017Fquat_${suffix}`}, ${`squat_${suffix}`}, 'x') RETURNING id`;
    const before = await snapshot();
    const run = await userRoleCli([`squat_${suffix}`, "admin"], t.database.url);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("U+017F");
    expect(run.stdout).toBe("");
    expect((await userRow(id)).role).toBe("user");
    expect(await snapshot()).toEqual(before);
  }, 30_000);

  const refused: [label: string, args: (name: string) => string[], code: number, stderr: RegExp][] = [
    ["unknown user", () => [`ghost_${crypto.randomUUID().slice(0, 8)}`, "moderator"], 1, /no user named/],
    ["bad role", (name) => [name, "root"], 2, /^usage: bun run user:role <username> <user\|moderator\|admin>/],
    ["role in the wrong case", (name) => [name, "Admin"], 2, /^usage: /],
    ["no role", (name) => [name], 2, /^usage: /],
    ["no arguments", () => [], 2, /^usage: /],
  ];
  test.each(refused)("%s: non-zero exit, usage or reason on stderr, nothing changed", async (_label, args, code, stderr) => {
    const target = await t.register(uniqueName("clinope"));
    const before = await snapshot();
    const run = await userRoleCli(args(target.user.username), t.database.url);
    expect(run.code).toBe(code);
    expect(run.stderr).toMatch(stderr);
    expect(run.stdout).toBe("");
    expect(await snapshot()).toEqual(before);
  }, 30_000);
});

describe("PATCH /api/users/:id {role}", () => {
  test("an admin sets each role: 200 with exactly the user, the row changed, audited with actor, ip and from/to", async () => {
    const target = await makeUser("user", "promo");
    let from: Role = "user";
    for (const to of ["moderator", "admin", "user", "admin", "moderator"] as const) {
      const since = await maxAuditId();
      const res = await setRole(root.token, target.user.id, { role: to });
      await expectPublicUser(res, { ...target.user, role: to });
      expect(await auditSince(since)).toEqual([
        { actor_id: root.user.id, action: "role_change", target_type: "user", target_id: String(target.user.id), ip: peer, meta: { from, to } },
      ]);
      from = to;
    }
  });

  test("setting the role a user already has answers 200 and writes no audit row", async () => {
    const target = await makeUser("moderator", "same");
    const since = await maxAuditId();
    const res = await setRole(root.token, target.user.id, { role: "moderator" });
    await expectPublicUser(res, { ...target.user, role: "moderator" });
    expect(await auditSince(since)).toEqual([]);
  });

  test("a role change takes effect at once for the target's existing token (no re-login)", async () => {
    const target = await makeUser("user", "instant");
    const audit = () => call("GET", "/api/admin/audit?limit=1", target.token);
    await expectError(await audit(), 403, "FORBIDDEN");
    expect((await setRole(root.token, target.user.id, { role: "admin" })).status).toBe(200);
    const ok = await audit();
    expect(ok.status).toBe(200);
    await ok.body?.cancel();
    // The promoted admin acts as one with the token signed while a user.
    const other = await makeUser("user", "victim");
    expect((await setRole(target.token, other.user.id, { role: "moderator" })).status).toBe(200);
    expect((await setRole(otherAdmin.token, target.user.id, { role: "user" })).status).toBe(200);
    await expectError(await audit(), 403, "FORBIDDEN");
    await expectError(await setRole(target.token, other.user.id, { role: "user" }), 403, "FORBIDDEN");
    expect((await userRow(other.user.id)).role).toBe("moderator");
  });

  // Each row: who calls (a fresh account of that role, or none), the target, the body → status, code, the field named.
  type Actor = Role | "none";
  type Target = "user" | "moderator" | "admin" | "self" | "unknown" | "abc" | "0" | "-1" | "1.5" | "2147483648";
  const refused: [label: string, actor: Actor, target: Target, body: unknown, status: number, code: string, path?: string][] = [
    ["a user promotes another user", "user", "user", { role: "moderator" }, 403, "FORBIDDEN"],
    ["a user promotes themself to admin", "user", "self", { role: "admin" }, 403, "FORBIDDEN"],
    ["a user demotes an admin", "user", "admin", { role: "user" }, 403, "FORBIDDEN"],
    ["a moderator promotes a user", "moderator", "user", { role: "moderator" }, 403, "FORBIDDEN"],
    ["a moderator promotes themself", "moderator", "self", { role: "admin" }, 403, "FORBIDDEN"],
    ["a moderator demotes an admin", "moderator", "admin", { role: "user" }, 403, "FORBIDDEN"],
    ["an admin demotes themself", "admin", "self", { role: "user" }, 403, "FORBIDDEN"],
    ["an admin sets their own role to admin", "admin", "self", { role: "admin" }, 403, "FORBIDDEN"],
    ["an admin, unknown id", "admin", "unknown", { role: "moderator" }, 404, "NOT_FOUND"],
    ["id abc", "admin", "abc", { role: "moderator" }, 400, "VALIDATION_FAILED", "id"],
    ["id 0", "admin", "0", { role: "moderator" }, 400, "VALIDATION_FAILED", "id"],
    ["id -1", "admin", "-1", { role: "moderator" }, 400, "VALIDATION_FAILED", "id"],
    ["id 1.5", "admin", "1.5", { role: "moderator" }, 400, "VALIDATION_FAILED", "id"],
    ["id past int4", "admin", "2147483648", { role: "moderator" }, 400, "VALIDATION_FAILED", "id"],
    ['role "root"', "admin", "user", { role: "root" }, 400, "VALIDATION_FAILED", "role"],
    ['role ""', "admin", "user", { role: "" }, 400, "VALIDATION_FAILED", "role"],
    ["role 5", "admin", "user", { role: 5 }, 400, "VALIDATION_FAILED", "role"],
    ["role null", "admin", "user", { role: null }, 400, "VALIDATION_FAILED", "role"],
    ['role "Admin" (wrong case)', "admin", "user", { role: "Admin" }, 400, "VALIDATION_FAILED", "role"],
    ["role missing", "admin", "user", {}, 400, "VALIDATION_FAILED", "role"],
    ["body a JSON string", "admin", "user", '"admin"', 400, "VALIDATION_FAILED"],
    ["body not JSON", "admin", "user", "{role: admin", 400, "BAD_JSON"],
    ["no body", "admin", "user", NO_BODY, 400, "VALIDATION_FAILED", "role"],
    ["no token", "none", "user", { role: "admin" }, 401, "UNAUTHORIZED"],
  ];

  test.each(refused.map((row) => [row[0], row] as const))("%s → refused, nothing changed", async (_label, [, actorRole, targetKind, body, status, code, path]) => {
    const actor = actorRole === "none" ? undefined : await makeUser(actorRole, `actor_${actorRole}`);
    const targetId =
      targetKind === "self"
        ? actor!.user.id
        : targetKind === "unknown"
          ? 2_147_483_647
          : targetKind === "user" || targetKind === "moderator" || targetKind === "admin"
            ? (await makeUser(targetKind, `target_${targetKind}`)).user.id
            : targetKind;
    const before = await snapshot();
    const res = await setRole(actor?.token, targetId, body);
    const { error } = await expectError(res, status, code, path);
    if (status === 403 || status === 401 || status === 404) expect(error.details).toBeUndefined();
    expect(await snapshot()).toEqual(before);
  });
});

describe("POST /api/users/:id/ban and /unban", () => {
  type BanActor = "user" | "moderator" | "admin" | "other admin";
  const actorOf = async (kind: BanActor) => (kind === "other admin" ? otherAdmin : kind === "admin" ? root : makeUser(kind, `banner_${kind}`));

  // Each row: the actor, the target's role, the body (NO_BODY = none at all) → the reason stored.
  const allowed: [label: string, actor: BanActor, target: Role, body: unknown, reason: string | null][] = [
    ["a moderator bans a user, with a reason", "moderator", "user", { reason: "spam" }, "spam"],
    ["a moderator bans a user, no body at all", "moderator", "user", NO_BODY, null],
    ["a moderator bans a user, empty object", "moderator", "user", {}, null],
    ["a moderator bans a user, reason of exactly 500 characters", "moderator", "user", { reason: "я".repeat(500) }, "я".repeat(500)],
    ["a moderator bans a user, reason trimmed", "moderator", "user", { reason: "  flood \n" }, "flood"],
    ["an admin bans a moderator", "admin", "moderator", { reason: "abuse of power" }, "abuse of power"],
    ["an admin bans a user", "admin", "user", NO_BODY, null],
    // Documented: the policy refuses only targets that rank *above* the actor, so peers may ban each other.
    ["a moderator bans another moderator (same rank: allowed)", "moderator", "moderator", { reason: "peer" }, "peer"],
    ["an admin bans another admin (same rank: allowed)", "admin", "admin", NO_BODY, null],
  ];

  test.each(allowed)("%s → 200, banned, every session revoked, audited", async (_label, actorKind, targetRole, body, reason) => {
    const actor = await actorOf(actorKind);
    const target = await makeUser(targetRole, `banned_${targetRole}`);
    const second = await login(target.user.username);
    expect(second.status).toBe(200);
    const bystander = await makeUser("user", "bystander");
    const since = await maxAuditId();
    const startedAt = Date.now();

    const res = await ban(actor.token, target.user.id, body);
    await expectPublicUser(res, target.user);
    const row = await userRow(target.user.id);
    expect(row.banned_at).toBeInstanceOf(Date);
    expect(Math.abs(row.banned_at!.getTime() - startedAt)).toBeLessThan(10_000);
    expect(row.ban_reason).toBe(reason);
    expect(row.role).toBe(targetRole);
    expect(await auditSince(since)).toEqual([
      { actor_id: actor.user.id, action: "ban", target_type: "user", target_id: String(target.user.id), ip: peer, meta: reason === null ? {} : { reason } },
    ]);
    const sessions = await sql`SELECT revoked_at, revoked_reason FROM sessions WHERE user_id = ${target.user.id}`;
    expect(sessions).toHaveLength(2);
    for (const s of sessions) expect(s).toEqual({ revoked_at: expect.any(Date), revoked_reason: "ban" });
    // Nobody else was touched.
    expect((await userRow(bystander.user.id)).banned_at).toBeNull();
    expect(await sql`SELECT revoked_at FROM sessions WHERE user_id = ${bystander.user.id}`).toEqual([{ revoked_at: null }]);
    expect((await me(bystander.token)).status).toBe(200);
  });

  test("banning an already banned user keeps the original banned_at and takes the new reason", async () => {
    const mod = await makeUser("moderator");
    const target = await makeUser("user", "twice");
    expect((await ban(mod.token, target.user.id, { reason: "first" })).status).toBe(200);
    const first = await userRow(target.user.id);
    await Bun.sleep(5);
    expect((await ban(root.token, target.user.id, { reason: "second" })).status).toBe(200);
    const second = await userRow(target.user.id);
    expect(second.banned_at).toEqual(first.banned_at);
    expect(second.ban_reason).toBe("second");
  });

  type BanTarget = Role | "self" | "unknown" | "abc" | "0" | "-1";
  const refusedBans: [label: string, actor: BanActor | "none", target: BanTarget, body: unknown, status: number, code: string, path?: string][] = [
    ["a moderator bans an admin", "moderator", "admin", { reason: "coup" }, 403, "FORBIDDEN"],
    ["a moderator bans an admin, no body", "moderator", "admin", NO_BODY, 403, "FORBIDDEN"],
    ["a user bans a user", "user", "user", NO_BODY, 403, "FORBIDDEN"],
    ["a user bans a moderator", "user", "moderator", NO_BODY, 403, "FORBIDDEN"],
    ["a user bans an admin", "user", "admin", NO_BODY, 403, "FORBIDDEN"],
    ["a user bans themself", "user", "self", NO_BODY, 403, "FORBIDDEN"],
    ["a moderator bans themself", "moderator", "self", { reason: "tired" }, 403, "FORBIDDEN"],
    ["an admin bans themself", "admin", "self", NO_BODY, 403, "FORBIDDEN"],
    ["an admin, unknown id", "admin", "unknown", NO_BODY, 404, "NOT_FOUND"],
    ["a moderator, unknown id", "moderator", "unknown", NO_BODY, 404, "NOT_FOUND"],
    ["id abc", "moderator", "abc", NO_BODY, 400, "VALIDATION_FAILED", "id"],
    ["id 0", "moderator", "0", NO_BODY, 400, "VALIDATION_FAILED", "id"],
    ["id -1", "moderator", "-1", NO_BODY, 400, "VALIDATION_FAILED", "id"],
    ["reason of 501 characters", "moderator", "user", { reason: "x".repeat(501) }, 400, "VALIDATION_FAILED", "reason"],
    ["reason empty", "moderator", "user", { reason: "" }, 400, "VALIDATION_FAILED", "reason"],
    ["reason only spaces", "moderator", "user", { reason: "   " }, 400, "VALIDATION_FAILED", "reason"],
    ["reason a number", "moderator", "user", { reason: 5 }, 400, "VALIDATION_FAILED", "reason"],
    ["body not JSON", "moderator", "user", "{reason", 400, "BAD_JSON"],
    ["no token", "none", "user", NO_BODY, 401, "UNAUTHORIZED"],
  ];

  /** The target of a refusal row, with a live session, so a wrongful ban would show in `sessions`. */
  async function refusalTarget(kind: BanTarget, actor: Registered | undefined): Promise<{ id: number | string; token?: string }> {
    if (kind === "self") return { id: actor!.user.id, token: actor!.token };
    if (kind === "unknown") return { id: 2_147_483_647 };
    if (kind === "user" || kind === "moderator" || kind === "admin") {
      const user = await makeUser(kind, `safe_${kind}`);
      return { id: user.user.id, token: user.token };
    }
    return { id: kind };
  }

  test.each(refusedBans.map((row) => [row[0], row] as const))("ban: %s → refused, nothing changed", async (_label, [, actorKind, targetKind, body, status, code, path]) => {
    const actor = actorKind === "none" ? undefined : actorKind === "user" || actorKind === "moderator" ? await makeUser(actorKind, `banner_${actorKind}`) : await actorOf(actorKind);
    const target = await refusalTarget(targetKind, actor);
    const before = await snapshot();
    const res = await ban(actor?.token, target.id, body);
    const { error } = await expectError(res, status, code, path);
    if (status !== 400) expect(error.details).toBeUndefined();
    expect(await snapshot()).toEqual(before);
    if (target.token) expect((await me(target.token)).status).toBe(200);
  });

  test.each(refusedBans.filter(([, , , body]) => body === NO_BODY).map((row) => [row[0].replace(" bans ", " unbans "), row] as const))("unban: %s → refused, nothing changed", async (_label, [, actorKind, targetKind, , status, code, path]) => {
    // Fresh actors of every kind, so no shared admin is ever banned here.
    const actor = actorKind === "none" ? undefined : await makeUser(actorKind === "other admin" ? "admin" : actorKind, `unbanner_${actorKind}`);
    const target = await refusalTarget(targetKind, actor);
    // A banned target, where there is one (an admin may ban anyone but themself). One's own
    // account stays unbanned: a banned account cannot call anything (the next test).
    if (typeof target.id === "number" && target.id !== 2_147_483_647 && targetKind !== "self") {
      expect((await ban(otherAdmin.token, target.id, { reason: "held" })).status).toBe(200);
    }
    const before = await snapshot();
    const { error } = await expectError(await unban(actor?.token, target.id), status, code, path);
    if (status !== 400) expect(error.details).toBeUndefined();
    expect(await snapshot()).toEqual(before);
  });

  test.each(["user", "moderator", "admin"] as const)("a banned %s cannot unban themself: 403 BANNED, still banned", async (role) => {
    const banned = await makeUser(role, `selfunban_${role}`);
    expect((await ban(otherAdmin.token, banned.user.id, { reason: "held" })).status).toBe(200);
    const before = await snapshot();
    await expectError(await unban(banned.token, banned.user.id), 403, "BANNED");
    expect(await snapshot()).toEqual(before);
  });

  test("a moderator cannot unban an admin (403, still banned); an admin can", async () => {
    const mod = await makeUser("moderator");
    const bannedAdmin = await makeUser("admin", "fallen");
    expect((await ban(otherAdmin.token, bannedAdmin.user.id, { reason: "rogue" })).status).toBe(200);
    const before = await snapshot();
    await expectError(await unban(mod.token, bannedAdmin.user.id), 403, "FORBIDDEN");
    expect(await snapshot()).toEqual(before);
    expect((await userRow(bannedAdmin.user.id)).banned_at).toBeInstanceOf(Date);

    const since = await maxAuditId();
    await expectPublicUser(await unban(root.token, bannedAdmin.user.id), bannedAdmin.user);
    expect(await auditSince(since)).toEqual([
      { actor_id: root.user.id, action: "unban", target_type: "user", target_id: String(bannedAdmin.user.id), ip: peer, meta: {} },
    ]);
  });

  test("a banned user: sockets on both transports cut at once, login/refresh/REST refused with BANNED; unban lets them log in again", async () => {
    const mod = await makeUser("moderator");
    const victim = await makeUser("user", "victim");
    const secondLogin = await login(victim.user.username);
    expect(secondLogin.status).toBe(200);
    const second = (await secondLogin.json()) as { token: string; refreshToken: string };
    // A spare refresh token, rotated once so the victim holds an unspent one of a live session.
    const rotated = await refresh(second.refreshToken);
    expect(rotated.status).toBe(200);
    const live = (await rotated.json()) as { token: string; refreshToken: string };

    // Every token on every transport, plus a bystander who must stay connected.
    const sockets: { socket: ChatClient; cut: Promise<{ reason: string; at: number }> }[] = [];
    for (const token of [victim.token, live.token]) {
      for (const transport of transports) {
        const socket = await connect(token, transport);
        sockets.push({ socket, cut: disconnected(socket) });
      }
    }
    const bystander = await makeUser("user", "stays");
    const bystanderSocket = await connect(bystander.token, "polling");
    let bystanderCut = false;
    bystanderSocket.on("disconnect", () => (bystanderCut = true));

    const sessionIds = [sidOf(victim.token), sidOf(live.token)];
    const started = performance.now();
    await expectPublicUser(await ban(mod.token, victim.user.id, { reason: "spam" }), victim.user);
    for (const { socket, cut } of sockets) {
      const { reason, at } = await cut;
      expect(reason).toBe("io server disconnect");
      expect(at - started).toBeLessThan(1_500);
      expect(socket.connected).toBe(false);
    }
    expect(bystanderSocket.connected).toBe(true);

    // Every session of theirs is revoked.
    const sessions = await sql`SELECT id, revoked_at, revoked_reason FROM sessions WHERE user_id = ${victim.user.id} ORDER BY id`;
    expect(sessions.map((s: Json) => s.id).sort()).toEqual([...sessionIds].sort());
    for (const s of sessions) expect(s).toEqual({ id: expect.any(String), revoked_at: expect.any(Date), revoked_reason: "ban" });

    const since = await maxAuditId();
    // Login with the right password: BANNED. With a wrong one: the usual answer, nothing learned.
    await expectError(await login(victim.user.username), 403, "BANNED");
    await expectError(await login(victim.user.username, "wrong password!"), 401, "INVALID_CREDENTIALS");
    // Their unspent refresh token: BANNED, and no new session or token issued.
    const tokensBefore = await sql`SELECT count(*)::int AS n FROM refresh_tokens`;
    await expectError(await refresh(live.refreshToken), 403, "BANNED");
    expect(await sql`SELECT count(*)::int AS n FROM refresh_tokens`).toEqual(tokensBefore);
    // Their existing access tokens on REST: BANNED.
    for (const token of [victim.token, live.token]) await expectError(await me(token), 403, "BANNED");
    // A new socket with the old token is turned away.
    await expect(t.connect(victim.token, "websocket")).rejects.toThrow("Unauthorized");
    // No login was written for the refused attempts (only the failed-password one).
    expect((await auditSince(since)).map((r: Json) => r.action)).toEqual(["login_failed"]);
    expect(await sql`SELECT count(*)::int AS n FROM sessions WHERE user_id = ${victim.user.id}`).toEqual([{ n: 2 }]);
    expect(bystanderCut).toBe(false);

    // Unban: they log in again; the sessions the ban ended stay ended.
    const revokedBefore = await sql`SELECT id, revoked_at FROM sessions WHERE user_id = ${victim.user.id} ORDER BY id`;
    const sinceUnban = await maxAuditId();
    await expectPublicUser(await unban(mod.token, victim.user.id), victim.user);
    expect(await userRow(victim.user.id)).toMatchObject({ banned_at: null, ban_reason: null });
    expect(await auditSince(sinceUnban)).toEqual([
      { actor_id: mod.user.id, action: "unban", target_type: "user", target_id: String(victim.user.id), ip: peer, meta: {} },
    ]);
    const again = await login(victim.user.username);
    expect(again.status).toBe(200);
    const fresh = (await again.json()) as { token: string; refreshToken: string };
    expect(await (await me(fresh.token)).json()).toEqual(victim.user);
    expect(await sql`SELECT id, revoked_at FROM sessions WHERE user_id = ${victim.user.id} AND id IN ${sql(sessionIds)} ORDER BY id`).toEqual(revokedBefore);
    for (const token of [victim.token, live.token]) await expectError(await me(token), 401, "UNAUTHORIZED");
    await expectError(await refresh(live.refreshToken), 401, "UNAUTHORIZED");
    const socket = await connect(fresh.token, "websocket");
    expect(socket.connected).toBe(true);
  });
});
