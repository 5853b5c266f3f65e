import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import { decode, sign, verify } from "hono/jwt";
import { io as ioClient } from "socket.io-client";
import { createApp } from "../src/app.ts";
import { createDb, poolOf } from "../src/lib/db.ts";
import { createLogger } from "../src/lib/logger.ts";
import { expectError } from "./helpers/expect-error.ts";
import { isMessage, record } from "./helpers/recorder.ts";
import {
  nextEvent,
  sendWithAck,
  startTestServer,
  testConfig,
  testJwtSecret,
  transports,
  uniqueName,
  type ChatClient,
  type Json,
  type Registered,
  type Transport,
} from "./helpers/server.ts";
import { b64url, now } from "./helpers/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { socketTracker } from "./helpers/sockets.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §7 (with §0 and §1): sessions as refresh-token families — rotation, reuse detection,
// logout, logout-all — and what an access token is worth on REST and on the socket handshake:
// signature and claims, the session it names, the user's ban and current role.

const adminName = uniqueName("root");
const t = await startTestServer({ env: { ADMIN_USERNAMES: adminName } });
const sql = t.database.sql;
const password = "correct horse battery";

// ---------------------------------------------------------------------------------------
// Helpers

/** Sockets opened by one test (websocket unless told), closed after it. */
const { connect } = socketTracker(t);

/** Resolves with the reason of `socket`'s next disconnect; set up before the act that should cause it. */
const disconnected = (socket: ChatClient, ms = 5_000) => nextEvent<string>(socket, "disconnect", ms);

/** Tries the handshake with `token` and reports what happened; never leaves a socket open. */
function attemptHandshake(token: string, transport: Transport) {
  const socket = ioClient(t.url, { auth: { token }, transports: [transport], reconnection: false, forceNew: true });
  return new Promise<{ connected: true } | { connected: false; error: Error }>((resolve) => {
    socket.once("connect", () => {
      socket.disconnect();
      resolve({ connected: true });
    });
    socket.once("connect_error", (error) => {
      socket.disconnect();
      resolve({ connected: false, error });
    });
  });
}

/** The handshake with `token` is refused with exactly "Unauthorized" and no connection reaches the server. */
async function expectHandshakeRefused(token: string, transport: Transport) {
  let serverConnections = 0;
  const onConnection = () => serverConnections++;
  t.app.io.on("connection", onConnection);
  try {
    const result = await attemptHandshake(token, transport);
    expect(result.connected).toBe(false);
    if (!result.connected) expect(result.error.message).toBe("Unauthorized");
    expect(serverConnections).toBe(0);
  } finally {
    t.app.io.off("connection", onConnection);
  }
}

/** `socket` is live end to end: its message is accepted (the session re-checked) and broadcast back to it. */
async function expectRoundTrip(socket: ChatClient, ...watchers: ChatClient[]) {
  const recorders = [socket, ...watchers].map(record);
  const ack = await sendWithAck(socket, { content: `still here ${crypto.randomUUID()}` });
  expect(ack).toEqual({ ok: true, message: expect.objectContaining({ id: expect.any(Number) }) });
  for (const recorder of recorders) {
    expect((await recorder.until(isMessage(ack.message.id))).at(-1)).toEqual(["message", ack.message]);
    recorder.stop();
  }
  expect(socket.connected).toBe(true);
}

const jsonHeaders = { "content-type": "application/json" };
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function post(path: string, body?: unknown, headers: Record<string, string> = {}) {
  return fetch(`${t.url}${path}`, {
    method: "POST",
    headers: { ...jsonHeaders, ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}
const refresh = (refreshToken: string) => post("/api/auth/refresh", { refreshToken });
const logout = (refreshToken: string) => post("/api/auth/logout", { refreshToken });
const logoutAll = (headers: Record<string, string>) => post("/api/auth/logout-all", undefined, headers);
const login = (username: string, pw = password) => post("/api/auth/login", { username, password: pw });
const me = (token: string) => fetch(`${t.url}/api/users/me`, { headers: bearer(token) });
const auditLog = (token: string) => fetch(`${t.url}/api/admin/audit?limit=1`, { headers: bearer(token) });

/** The token pair a successful refresh returns, asserting its exact shape. */
async function refreshed(res: Response): Promise<{ token: string; refreshToken: string }> {
  expect(res.status).toBe(200);
  const body: Json = await res.json();
  expect(Object.keys(body).sort()).toEqual(["refreshToken", "token"]);
  expect(body.refreshToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
  return body;
}

/** Logs in and returns the auth result (a new session of the same user). */
async function newSession(user: Registered): Promise<Registered> {
  const res = await login(user.user.username);
  expect(res.status).toBe(200);
  return res.json() as Promise<Registered>;
}

/** 200 for a live session's token; the body is the caller. */
async function expectAccepted(token: string, user: Registered) {
  const res = await me(token);
  expect(res.status).toBe(200);
  expect(((await res.json()) as Json).id).toBe(user.user.id);
}

const sidOf = (token: string): string => (decode(token).payload as Json).sid;
const sha256Hex = (s: string) => createHash("sha256").update(s).digest("hex");
/** A well-formed refresh token nobody was ever issued. */
const unknownRefreshToken = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");

async function sessionRow(id: string) {
  const [row] = await sql`SELECT id::text, user_id, expires_at, revoked_at, revoked_reason FROM sessions WHERE id = ${id}::uuid`;
  return row as { id: string; user_id: number; expires_at: Date; revoked_at: Date | null; revoked_reason: string | null };
}

async function sessionsOf(userId: number) {
  const rows = await sql`SELECT id::text, revoked_at, revoked_reason FROM sessions WHERE user_id = ${userId} ORDER BY created_at, id`;
  return [...rows] as { id: string; revoked_at: Date | null; revoked_reason: string | null }[];
}

async function refreshTokensOf(sessionId: string) {
  const rows = await sql`SELECT token_hash, spent_at FROM refresh_tokens WHERE session_id = ${sessionId}::uuid ORDER BY id`;
  return [...rows] as { token_hash: string; spent_at: Date | null }[];
}

async function auditRows(action: string, targetId: string | number) {
  const rows = await sql`
    SELECT actor_id, action, target_type, target_id, ip, meta FROM audit_log
    WHERE action = ${action} AND target_id = ${String(targetId)} ORDER BY id`;
  return [...rows] as { actor_id: number | null; action: string; target_type: string; target_id: string; ip: string; meta: Json }[];
}

/**
 * Everything a session attack could change: every session, refresh token and user as stored,
 * and the audit trail's length. Compared before and after a refused request.
 */
async function snapshot() {
  const sessions = await sql`SELECT id::text, user_id, created_at, expires_at, revoked_at, revoked_reason FROM sessions ORDER BY id`;
  const refreshTokens = await sql`SELECT id, session_id::text, token_hash, created_at, spent_at FROM refresh_tokens ORDER BY id`;
  const users = await sql`SELECT id, username, role::text AS role, banned_at, ban_reason, password_hash FROM users ORDER BY id`;
  const [audit] = await sql`SELECT count(*)::int AS n, coalesce(max(id), 0)::text AS last FROM audit_log`;
  return { sessions: [...sessions], refreshTokens: [...refreshTokens], users: [...users], audit: { ...audit } };
}

/** How many rows in any table of the public schema contain `needle` in their text form. */
async function occurrencesInDatabase(needle: string): Promise<number> {
  const tables: { table_name: string }[] = await sql`
    SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`;
  expect(tables.map((r) => r.table_name)).toEqual(expect.arrayContaining(["sessions", "refresh_tokens", "audit_log"]));
  let total = 0;
  for (const { table_name } of tables) {
    const [row] = await sql.unsafe(`SELECT count(*)::int AS n FROM "${table_name}" AS t WHERE strpos(t::text, $1) > 0`, [needle]);
    total += row.n;
  }
  return total;
}

const admin = await t.register(adminName);
expect(admin.user.role).toBe("admin");

// ---------------------------------------------------------------------------------------
// 1. Rotation

describe("POST /api/auth/refresh: rotation", () => {
  test("200 exactly { token, refreshToken }: a new refresh token, the old one spent, the same session", async () => {
    const user = await t.register();
    const sid = sidOf(user.token);
    const before = await sessionRow(sid);
    expect(await refreshTokensOf(sid)).toEqual([{ token_hash: sha256Hex(user.refreshToken), spent_at: null }]);

    const next = await refreshed(await refresh(user.refreshToken));
    expect(next.refreshToken).not.toBe(user.refreshToken);

    // The new access token: HS256 with our secret, same user, same session id.
    const { header } = decode(next.token);
    expect(header).toEqual({ alg: "HS256", typ: "JWT" });
    const claims = await verify(next.token, testJwtSecret, "HS256");
    expect(claims).toMatchObject({ sub: String(user.user.id), username: user.user.username, role: "user", sid });
    expect(claims.exp).toBeGreaterThan(now());

    // Stored: the old hash spent, the new hash unspent, both in the one session; nothing else new.
    const tokens = await refreshTokensOf(sid);
    expect(tokens).toEqual([
      { token_hash: sha256Hex(user.refreshToken), spent_at: expect.any(Date) },
      { token_hash: sha256Hex(next.refreshToken), spent_at: null },
    ]);
    expect(Math.abs(tokens[0]!.spent_at!.getTime() - Date.now())).toBeLessThan(60_000);
    const after = await sessionRow(sid);
    expect(after).toMatchObject({ revoked_at: null, revoked_reason: null, user_id: user.user.id });
    expect(after.expires_at.getTime()).toBeGreaterThanOrEqual(before.expires_at.getTime());
    expect(await sessionsOf(user.user.id)).toHaveLength(1);

    // Only hashes are stored: neither raw token appears in any row of any table.
    expect(await occurrencesInDatabase(user.refreshToken)).toBe(0);
    expect(await occurrencesInDatabase(next.refreshToken)).toBe(0);
    expect(await occurrencesInDatabase(sha256Hex(next.refreshToken))).toBe(1);

    // The session lives on: both access tokens work, and the chain goes on from the new token.
    await expectAccepted(next.token, user);
    await expectAccepted(user.token, user);
    const third = await refreshed(await refresh(next.refreshToken));
    expect(new Set([user.refreshToken, next.refreshToken, third.refreshToken]).size).toBe(3);
    expect(sidOf(third.token)).toBe(sid);
    expect((await refreshTokensOf(sid)).map((r) => r.spent_at === null)).toEqual([false, false, true]);
  });

  test("401 UNAUTHORIZED for a well-formed refresh token that was never issued; nothing changes", async () => {
    await t.register();
    const before = await snapshot();
    const { error } = await expectError(await refresh(unknownRefreshToken()), 401, "UNAUTHORIZED");
    expect(error.details).toBeUndefined();
    expect(await snapshot()).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------
// 2. Reuse detection

describe("a spent refresh token presented again (reuse = theft)", () => {
  test("401; the whole family is revoked (refresh-reuse), its access tokens refused, its sockets cut, audited", async () => {
    const user = await t.register();
    const sid = sidOf(user.token);
    const bystander = await newSession(user);
    const b = await refreshed(await refresh(user.refreshToken));

    const sockets = [await connect(user.token, "websocket"), await connect(b.token, "polling")];
    const bystanderSocket = await connect(bystander.token, "websocket");
    const cut = sockets.map((s) => disconnected(s));
    await expectAccepted(b.token, user); // the access check is now warm in the cache

    const { error } = await expectError(await refresh(user.refreshToken), 401, "UNAUTHORIZED");
    expect(error.details).toBeUndefined();

    // Sockets of the family are cut by the server, at once.
    expect(await Promise.all(cut)).toEqual(["io server disconnect", "io server disconnect"]);
    // The family is revoked, no token was issued.
    expect(await sessionRow(sid)).toMatchObject({ revoked_at: expect.any(Date), revoked_reason: "refresh-reuse" });
    expect(await refreshTokensOf(sid)).toEqual([
      { token_hash: sha256Hex(user.refreshToken), spent_at: expect.any(Date) },
      { token_hash: sha256Hex(b.refreshToken), spent_at: null },
    ]);
    const audit = await auditRows("refresh_reuse", sid);
    expect(audit).toEqual([{ actor_id: user.user.id, action: "refresh_reuse", target_type: "session", target_id: sid, ip: "127.0.0.1", meta: {} }]);

    // B, never spent, is dead too; the access tokens of that session are refused by REST and handshake.
    const before = await snapshot();
    await expectError(await refresh(b.refreshToken), 401, "UNAUTHORIZED");
    for (const token of [user.token, b.token]) {
      await expectError(await me(token), 401, "UNAUTHORIZED");
      await expectHandshakeRefused(token, "websocket");
    }
    expect(await snapshot()).toEqual(before);

    // Another session of the same user is another family: untouched.
    expect((await sessionRow(sidOf(bystander.token))).revoked_at).toBeNull();
    await expectAccepted(bystander.token, user);
    await expectRoundTrip(bystanderSocket);
    await refreshed(await refresh(bystander.refreshToken));
  });

  test("a reused token of an already revoked family: still 401, and reuse stays on the record", async () => {
    const user = await t.register();
    const sid = sidOf(user.token);
    await refreshed(await refresh(user.refreshToken));
    await expectError(await refresh(user.refreshToken), 401, "UNAUTHORIZED");
    const revoked = await sessionRow(sid);
    await expectError(await refresh(user.refreshToken), 401, "UNAUTHORIZED");
    // The first revocation stands as it was (time and reason).
    expect(await sessionRow(sid)).toEqual(revoked);
    expect(await auditRows("refresh_reuse", sid)).toHaveLength(2);
  });

  // Observed: both requests find the token unspent; the spend is a conditional update
  // (`spent_at IS NULL`) in a transaction, so exactly one spends it and gets a new pair, and
  // the other is treated as a reuse, which revokes the family — the winner's fresh tokens die
  // with it. So two tabs must not refresh one token concurrently (README says so).
  test("two concurrent refreshes with one token: exactly one 200, the other 401, and the family is revoked", async () => {
    const user = await t.register();
    for (let round = 0; round < 5; round++) {
      const session = round === 0 ? user : await newSession(user);
      const sid = sidOf(session.token);
      const results = await Promise.all([refresh(session.refreshToken), refresh(session.refreshToken)]);
      const statuses = results.map((r) => r.status).sort();
      expect(statuses).toEqual([200, 401]);
      const winner = await refreshed(results.find((r) => r.status === 200)!);
      await expectError(results.find((r) => r.status === 401)!, 401, "UNAUTHORIZED");

      // One new token was issued, the presented one is spent, and the family is revoked for reuse.
      const tokens = await refreshTokensOf(sid);
      expect(tokens).toEqual([
        { token_hash: sha256Hex(session.refreshToken), spent_at: expect.any(Date) },
        { token_hash: sha256Hex(winner.refreshToken), spent_at: null },
      ]);
      expect(await sessionRow(sid)).toMatchObject({ revoked_at: expect.any(Date), revoked_reason: "refresh-reuse" });
      expect(await auditRows("refresh_reuse", sid)).toHaveLength(1);
      await expectError(await refresh(winner.refreshToken), 401, "UNAUTHORIZED");
      await expectError(await me(winner.token), 401, "UNAUTHORIZED");
    }
  });
});

// ---------------------------------------------------------------------------------------
// 3. Logout

describe("POST /api/auth/logout", () => {
  test("204 ends that session: its refresh token, access token and sockets (both transports); other sessions live on", async () => {
    const user = await t.register();
    const sid = sidOf(user.token);
    const other = await newSession(user);
    const ending = [await connect(user.token, "websocket"), await connect(user.token, "polling")];
    const staying = [await connect(other.token, "websocket"), await connect(other.token, "polling")];
    const cut = ending.map((s) => disconnected(s));
    const stayingEvents = staying.map(record);
    await expectAccepted(user.token, user);

    const res = await logout(user.refreshToken);
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");

    expect(await Promise.all(cut)).toEqual(["io server disconnect", "io server disconnect"]);
    expect(await sessionRow(sid)).toMatchObject({ revoked_at: expect.any(Date), revoked_reason: "logout" });
    expect(await auditRows("logout", sid)).toEqual([
      { actor_id: user.user.id, action: "logout", target_type: "session", target_id: sid, ip: "127.0.0.1", meta: {} },
    ]);

    const before = await snapshot();
    await expectError(await refresh(user.refreshToken), 401, "UNAUTHORIZED");
    await expectError(await me(user.token), 401, "UNAUTHORIZED");
    for (const transport of transports) await expectHandshakeRefused(user.token, transport);
    expect(await snapshot()).toEqual(before);

    // The other session of the same user: REST, both sockets (never disconnected), refresh.
    expect((await sessionRow(sidOf(other.token))).revoked_at).toBeNull();
    await expectAccepted(other.token, user);
    for (const socket of staying) expect(socket.connected).toBe(true);
    await expectRoundTrip(staying[1]!, staying[0]!);
    for (const events of stayingEvents) expect(events.events.filter(([e]) => e !== "message")).toEqual([]);
    await refreshed(await refresh(other.refreshToken));
  });

  test("a spent refresh token of the session logs it out too", async () => {
    const user = await t.register();
    const sid = sidOf(user.token);
    const next = await refreshed(await refresh(user.refreshToken));
    expect((await logout(user.refreshToken)).status).toBe(204);
    expect(await sessionRow(sid)).toMatchObject({ revoked_at: expect.any(Date), revoked_reason: "logout" });
    await expectError(await refresh(next.refreshToken), 401, "UNAUTHORIZED");
    await expectError(await me(next.token), 401, "UNAUTHORIZED");
  });

  test("204 for an unknown (well-formed) refresh token, and nothing changes", async () => {
    const user = await t.register();
    const socket = await connect(user.token);
    const before = await snapshot();
    const res = await logout(unknownRefreshToken());
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    expect(await snapshot()).toEqual(before);
    await expectAccepted(user.token, user);
    await expectRoundTrip(socket);
  });

  const valid = "A".repeat(43);
  // Every row is complete (bun passes a `done` callback in place of missing trailing arguments).
  const badBodies: [label: string, status: number, code: string, path: string | null, body: string | undefined, contentType: string][] = [
    ["no body", 400, "BAD_JSON", null, undefined, "application/json"],
    ["empty body", 400, "BAD_JSON", null, "", "application/json"],
    ["not JSON", 400, "BAD_JSON", null, "{refreshToken:", "application/json"],
    ["JSON sent as text/plain", 400, "BAD_JSON", null, JSON.stringify({ refreshToken: valid }), "text/plain"],
    ["JSON sent as form data", 400, "BAD_JSON", null, `refreshToken=${valid}`, "application/x-www-form-urlencoded"],
    ["an empty object", 400, "VALIDATION_FAILED", "refreshToken", "{}", "application/json"],
    ["null", 400, "VALIDATION_FAILED", "(root)", "null", "application/json"],
    ["an array", 400, "VALIDATION_FAILED", "(root)", JSON.stringify([valid]), "application/json"],
    ["a bare string", 400, "VALIDATION_FAILED", "(root)", JSON.stringify(valid), "application/json"],
    ["refreshToken a number", 400, "VALIDATION_FAILED", "refreshToken", '{"refreshToken":123}', "application/json"],
    ["refreshToken null", 400, "VALIDATION_FAILED", "refreshToken", '{"refreshToken":null}', "application/json"],
    ["refreshToken an object", 400, "VALIDATION_FAILED", "refreshToken", JSON.stringify({ refreshToken: { $ne: null } }), "application/json"],
    ["refreshToken an array", 400, "VALIDATION_FAILED", "refreshToken", JSON.stringify({ refreshToken: [valid] }), "application/json"],
    ["refreshToken empty", 400, "VALIDATION_FAILED", "refreshToken", '{"refreshToken":""}', "application/json"],
    ["refreshToken too short", 400, "VALIDATION_FAILED", "refreshToken", '{"refreshToken":"abc"}', "application/json"],
    ["refreshToken too long", 400, "VALIDATION_FAILED", "refreshToken", JSON.stringify({ refreshToken: "a".repeat(129) }), "application/json"],
    ["refreshToken with padding", 400, "VALIDATION_FAILED", "refreshToken", JSON.stringify({ refreshToken: `${valid}=` }), "application/json"],
    ["refreshToken with spaces", 400, "VALIDATION_FAILED", "refreshToken", JSON.stringify({ refreshToken: ` ${valid} ` }), "application/json"],
    ["refreshToken with SQL", 400, "VALIDATION_FAILED", "refreshToken", JSON.stringify({ refreshToken: "' OR 1=1 --aaaaaaaaaaaa" }), "application/json"],
    ["refreshToken under another key", 400, "VALIDATION_FAILED", "refreshToken", JSON.stringify({ token: valid }), "application/json"],
  ];

  describe.each(["/api/auth/logout", "/api/auth/refresh"])("%s with a bad body", (path) => {
    let victim: Registered;
    beforeAll(async () => {
      victim = await t.register();
    });

    test.each(badBodies)("%s → %i %s (details naming %p); nothing changes", async (_label, status, code, field, body, contentType) => {
      // A real refresh token rides along where the body shape allows, so a lax parser would act on it.
      const payload = body?.replaceAll(valid, victim.refreshToken);
      const before = await snapshot();
      const res = await fetch(`${t.url}${path}`, { method: "POST", headers: { "content-type": contentType }, body: payload });
      const { error } = await expectError(res, status, code, field ?? undefined);
      if (field === null) expect(error.details).toBeUndefined();
      expect(await snapshot()).toEqual(before);
      await expectAccepted(victim.token, victim);
    });
  });
});

// ---------------------------------------------------------------------------------------
// 4. Logout everywhere

describe("POST /api/auth/logout-all", () => {
  test("204: every session of the caller revoked, every socket cut, every token refused; another user untouched", async () => {
    const user = await t.register();
    const loggedOut = await newSession(user);
    expect((await logout(loggedOut.refreshToken)).status).toBe(204);
    const [s2, s3] = [await newSession(user), await newSession(user)];
    const live = [user, s2, s3];
    const sockets = [await connect(user.token, "websocket"), await connect(s2.token, "polling"), await connect(s3.token, "websocket"), await connect(s3.token, "polling")];
    const cut = sockets.map((s) => disconnected(s));

    const other = await t.register();
    const otherSockets = [await connect(other.token, "websocket"), await connect(other.token, "polling")];
    const otherBefore = await sessionsOf(other.user.id);
    const loggedOutBefore = await sessionRow(sidOf(loggedOut.token));

    const res = await logoutAll(bearer(s2.token));
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");

    expect(await Promise.all(cut)).toEqual(sockets.map(() => "io server disconnect"));
    const sessions = await sessionsOf(user.user.id);
    expect(sessions).toHaveLength(4);
    for (const session of live) {
      expect(await sessionRow(sidOf(session.token))).toMatchObject({ revoked_at: expect.any(Date), revoked_reason: "logout-all" });
    }
    // An already ended session keeps its own end.
    expect(await sessionRow(sidOf(loggedOut.token))).toEqual(loggedOutBefore);
    expect(await auditRows("logout_all", user.user.id)).toEqual([
      { actor_id: user.user.id, action: "logout_all", target_type: "user", target_id: String(user.user.id), ip: "127.0.0.1", meta: { sessions: 3 } },
    ]);

    const before = await snapshot();
    for (const session of [...live, loggedOut]) {
      await expectError(await refresh(session.refreshToken), 401, "UNAUTHORIZED");
      await expectError(await me(session.token), 401, "UNAUTHORIZED");
    }
    await expectHandshakeRefused(s3.token, "polling");
    expect(await snapshot()).toEqual(before);

    // The other user: sessions, REST, sockets, refresh.
    expect(await sessionsOf(other.user.id)).toEqual(otherBefore);
    await expectAccepted(other.token, other);
    for (const socket of otherSockets) expect(socket.connected).toBe(true);
    await expectRoundTrip(otherSockets[0]!, otherSockets[1]!);
    await refreshed(await refresh(other.refreshToken));
  });

  const refusals: [label: string, headers: () => Promise<Record<string, string>>][] = [
    ["no Authorization header", async () => ({})],
    ["a garbage bearer token", async () => ({ authorization: "Bearer garbage" })],
    ["the refresh token as a bearer token", async () => ({ authorization: `Bearer ${target.refreshToken}` })],
    ["a token signed with another secret", async () => bearer(await sign(claimsOf(target), `${testJwtSecret}-other`, "HS256"))],
    ["the token of a logged-out session of the same user", async () => bearer(endedSession.token)],
  ];
  let target: Registered;
  let endedSession: Registered;
  beforeAll(async () => {
    target = await t.register();
    endedSession = await newSession(target);
    expect((await logout(endedSession.refreshToken)).status).toBe(204);
  });

  test.each(refusals)("%s → 401 UNAUTHORIZED; no session ends", async (_label, headers) => {
    const socket = await connect(target.token);
    const before = await snapshot();
    await expectError(await logoutAll(await headers()), 401, "UNAUTHORIZED");
    expect(await snapshot()).toEqual(before);
    await expectAccepted(target.token, target);
    await expectRoundTrip(socket);
  });
});

// ---------------------------------------------------------------------------------------
// 5. Access-token attacks, on REST and on the handshake

/** The claims of `user`'s real token (real sid), with fresh times. */
function claimsOf(user: Registered, overrides: Record<string, unknown> = {}) {
  const { payload } = decode(user.token);
  return { ...(payload as Record<string, unknown>), iat: now(), exp: now() + 600, ...overrides };
}

describe("access tokens that must be refused", () => {
  // victim: a live session; other: another live user; revoked: a logged-out session; banned: banned by an admin.
  const who: Record<"victim" | "other" | "revoked" | "banned", Registered> = {} as never;
  beforeAll(async () => {
    [who.victim, who.other, who.revoked, who.banned] = await Promise.all([t.register(), t.register(), t.register(), t.register()]);
    expect((await logout(who.revoked.refreshToken)).status).toBe(204);
    await expectAccepted(who.banned.token, who.banned); // valid (and cached) before the ban
    const ban = await fetch(`${t.url}/api/users/${who.banned.user.id}/ban`, { method: "POST", headers: { ...jsonHeaders, ...bearer(admin.token) }, body: "{}" });
    expect(ban.status).toBe(200);
  });

  const tampered = (token: string, change: Record<string, unknown>) => {
    const [header, payload, signature] = token.split(".");
    const claims = JSON.parse(Buffer.from(payload ?? "", "base64url").toString("utf8"));
    return `${header}.${b64url({ ...claims, ...change })}.${signature}`;
  };

  type Row = [label: string, status: number, code: string, token: () => Promise<string>];
  const rows: Row[] = [
    ['alg "none", no signature', 401, "UNAUTHORIZED", async () => `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claimsOf(who.victim))}.`],
    [
      'alg "none" keeping a valid signature',
      401,
      "UNAUTHORIZED",
      async () => {
        const [, payload, signature] = (await sign(claimsOf(who.victim), testJwtSecret, "HS256")).split(".");
        return `${b64url({ alg: "none", typ: "JWT" })}.${payload}.${signature}`;
      },
    ],
    ["HS512 with the right secret", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim), testJwtSecret, "HS512")],
    ["HS384 with the right secret", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim), testJwtSecret, "HS384")],
    ["HS256 with another secret", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim), `${testJwtSecret}-but-not-ours`, "HS256")],
    ["expired", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim, { iat: now() - 3600, exp: now() - 60 }), testJwtSecret, "HS256")],
    ["expiring this very second", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim, { iat: now() - 60, exp: now() }), testJwtSecret, "HS256")],
    ["not yet valid (nbf in the future)", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim, { nbf: now() + 3600 }), testJwtSecret, "HS256")],
    ["issued in the future (iat)", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim, { iat: now() + 3600, exp: now() + 7200 }), testJwtSecret, "HS256")],
    ["payload tampered: role raised to admin, signature kept", 401, "UNAUTHORIZED", async () => tampered(who.victim.token, { role: "admin" })],
    ["payload tampered: sid swapped, signature kept", 401, "UNAUTHORIZED", async () => tampered(who.victim.token, { sid: sidOf(who.other.token) })],
    ["the issued token of a logged-out session", 401, "UNAUTHORIZED", async () => who.revoked.token],
    ["a fresh, well-signed token naming a logged-out session", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.revoked), testJwtSecret, "HS256")],
    ["a well-signed token naming a session that does not exist", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim, { sid: crypto.randomUUID() }), testJwtSecret, "HS256")],
    ["a well-signed token with a sid that is not a UUID", 401, "UNAUTHORIZED", async () => sign(claimsOf(who.victim, { sid: "not-a-uuid" }), testJwtSecret, "HS256")],
    [
      "a well-signed token: sub of another user with the victim's real sid",
      401,
      "UNAUTHORIZED",
      async () => sign(claimsOf(who.victim, { sub: String(who.other.user.id), username: who.other.user.username }), testJwtSecret, "HS256"),
    ],
    [
      "a well-signed token: sub of the victim with another user's real sid",
      401,
      "UNAUTHORIZED",
      async () => sign(claimsOf(who.victim, { sid: sidOf(who.other.token) }), testJwtSecret, "HS256"),
    ],
    ["a banned user's own unexpired token", 403, "BANNED", async () => who.banned.token],
    ["a fresh, well-signed token of a banned user", 403, "BANNED", async () => sign(claimsOf(who.banned), testJwtSecret, "HS256")],
  ];

  describe("REST (GET /api/users/me)", () => {
    test("control: a token signed here with the victim's real claims is accepted", async () => {
      await expectAccepted(await sign(claimsOf(who.victim), testJwtSecret, "HS256"), who.victim);
      await expectAccepted(who.victim.token, who.victim);
      await expectAccepted(who.other.token, who.other);
    });

    test.each(rows)("%s → %i %s; nothing changes", async (_label, status, code, makeToken) => {
      const token = await makeToken();
      const before = await snapshot();
      const { error } = await expectError(await me(token), status, code);
      expect(error.details).toBeUndefined();
      expect(await snapshot()).toEqual(before);
      // The victim and the other user are unaffected.
      await expectAccepted(who.victim.token, who.victim);
      await expectAccepted(who.other.token, who.other);
    });
  });

  describe.each(transports)("socket handshake over %s", (transport) => {
    test("control: a token signed here with the victim's real claims connects", async () => {
      const socket = await connect(await sign(claimsOf(who.victim), testJwtSecret, "HS256"), transport);
      await expectRoundTrip(socket);
    });

    test.each(rows)('%s → connect_error "Unauthorized"', async (_label, _status, _code, makeToken) => {
      const token = await makeToken();
      const before = await snapshot();
      await expectHandshakeRefused(token, transport);
      expect(await snapshot()).toEqual(before);
    });
  });
});

// ---------------------------------------------------------------------------------------
// 6. The access check is cached, and invalidated at once

describe("revocation is checked in memory, not with a query per request", () => {
  let sessionLookups = 0;
  /** Holds the result of the next session lookup until released (to stage a race), when armed. */
  let gate: { reached: () => void; release: Promise<void> } | undefined;

  /**
   * A client of the test database of its own for the second app, whose node-postgres pool counts
   * (and optionally holds) the access check's session lookups: the statement access-guard.ts sends.
   */
  const counted = createDb(t.database.url);
  afterAll(() => counted.$disconnect());
  const pool = poolOf(counted);
  const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
  pool.query = (async (...args: unknown[]) => {
    if ((args[0] as { name?: string } | undefined)?.name !== "access-guard-sessions") return query(...args);
    sessionLookups++;
    const result = await query(...args);
    const held = gate;
    if (held) {
      gate = undefined;
      held.reached();
      await held.release;
    }
    return result;
  }) as typeof pool.query;
  // A second app over the same database, with its own (cold) cache and no port: app.request().
  const second = createApp({ config: testConfig(t.database.url), db: counted, logger: createLogger("silent") });
  const request = async (path: string, init: RequestInit = {}): Promise<Response> => second.app.request(path, init);
  const meVia = (token: string) => request("/api/users/me", { headers: bearer(token) });
  const logoutVia = (refreshToken: string) =>
    request("/api/auth/logout", { method: "POST", headers: jsonHeaders, body: JSON.stringify({ refreshToken }) });

  test("20 authenticated requests with one token cost one session lookup; after a logout the next is refused", async () => {
    const user = await t.register();
    const start = sessionLookups;
    for (let i = 0; i < 20; i++) {
      const res = await meVia(user.token);
      expect(res.status).toBe(200);
      expect(((await res.json()) as Json).id).toBe(user.user.id);
    }
    expect(sessionLookups - start).toBe(1);

    // Another token of the same session shares the entry; another session is a second lookup.
    const next = await refreshed(await request("/api/auth/refresh", { method: "POST", headers: jsonHeaders, body: JSON.stringify({ refreshToken: user.refreshToken }) }));
    expect((await meVia(next.token)).status).toBe(200);
    expect(sessionLookups - start).toBe(1);
    const other = await newSession(user);
    for (let i = 0; i < 5; i++) expect((await meVia(other.token)).status).toBe(200);
    expect(sessionLookups - start).toBe(2);

    // Logout through this app drops the entry: the very next request is refused (one fresh lookup).
    expect((await logoutVia(next.refreshToken)).status).toBe(204);
    await expectError(await meVia(user.token), 401, "UNAUTHORIZED");
    await expectError(await meVia(next.token), 401, "UNAUTHORIZED");
    expect(sessionLookups - start).toBe(3);
    // ...and the refusal is itself cached, while the other session is still served from memory.
    for (let i = 0; i < 5; i++) {
      await expectError(await meVia(user.token), 401, "UNAUTHORIZED");
      expect((await meVia(other.token)).status).toBe(200);
    }
    expect(sessionLookups - start).toBe(3);
  });

  // A request misses the cache and reads the session while it is still live, but is held
  // before it caches what it read; meanwhile access ends through this same app (so its cache
  // is told). Whatever the held request answers, the cache must not keep the old state: the
  // next request is refused at once, not after the cache entry's lifetime.
  const viaSecond = (method: string, path: string, token: string, body?: unknown) =>
    request(path, { method, headers: { ...jsonHeaders, ...bearer(token) }, body: body === undefined ? undefined : JSON.stringify(body) });
  type Race = [
    label: string,
    setup: (user: Registered) => Promise<Registered | undefined>,
    path: string,
    act: (user: Registered, extra: Registered | undefined) => Promise<Response>,
    status: number,
    code: string,
  ];
  const races: Race[] = [
    ["logout", async () => undefined, "/api/users/me", (user) => logoutVia(user.refreshToken), 401, "UNAUTHORIZED"],
    [
      "logout-all from another session",
      (user) => newSession(user),
      "/api/users/me",
      (_user, other) => viaSecond("POST", "/api/auth/logout-all", other!.token),
      401,
      "UNAUTHORIZED",
    ],
    [
      "role lowered from admin to user",
      async (user) => {
        expect((await viaSecond("PATCH", `/api/users/${user.user.id}`, admin.token, { role: "admin" })).status).toBe(200);
        return undefined;
      },
      "/api/admin/audit?limit=1",
      (user) => viaSecond("PATCH", `/api/users/${user.user.id}`, admin.token, { role: "user" }),
      403,
      "FORBIDDEN",
    ],
    ["ban", async () => undefined, "/api/users/me", (user) => viaSecond("POST", `/api/users/${user.user.id}/ban`, admin.token, {}), 403, "BANNED"],
  ];

  test.each(races)("a lookup in flight across a %s does not leave the old state cached", async (_label, setup, path, act, status, code) => {
    const user = await t.register();
    const extra = await setup(user);
    expect((await viaSecond("GET", "/api/users/me", admin.token)).status).toBe(200); // the admin's own check is warm
    let reached!: () => void;
    const lookupDone = new Promise<void>((resolve) => (reached = resolve));
    let release!: () => void;
    gate = { reached, release: new Promise<void>((resolve) => (release = resolve)) };

    const first = viaSecond("GET", path, user.token);
    await lookupDone;
    const acted = await act(user, extra);
    expect([200, 204]).toContain(acted.status);
    release();
    // The held request raced the change; it may go either way.
    expect([200, status]).toContain((await first).status);
    await expectError(await viaSecond("GET", path, user.token), status, code);
  });
});

// ---------------------------------------------------------------------------------------
// 7. Roles come from the live state, not from the token

describe("role changes take effect at once, with the old token", () => {
  const setRole = (id: number, role: string) =>
    fetch(`${t.url}/api/users/${id}`, { method: "PATCH", headers: { ...jsonHeaders, ...bearer(admin.token) }, body: JSON.stringify({ role }) });

  test("raised to admin: the user's old 'user' token reads the audit log; lowered: 403 at once, even with an 'admin' token", async () => {
    const user = await t.register();
    expect((decode(user.token).payload as Json).role).toBe("user");
    const socket = await connect(user.token);

    // Before: a plain user. The refusal is warm in the cache now.
    await expectError(await auditLog(user.token), 403, "FORBIDDEN");

    const raised = await setRole(user.user.id, "admin");
    expect(raised.status).toBe(200);
    expect(await raised.json()).toEqual({ ...user.user, role: "admin" });
    const asAdmin = await auditLog(user.token);
    expect(asAdmin.status).toBe(200);
    expect(Array.isArray(await asAdmin.json())).toBe(true);
    const me1 = await me(user.token);
    expect(((await me1.json()) as Json).role).toBe("admin");

    // A token issued while admin says "admin"; the role in it is informational only.
    const adminSession = await newSession(user);
    expect((decode(adminSession.token).payload as Json).role).toBe("admin");
    expect((await auditLog(adminSession.token)).status).toBe(200);

    // Lowered to moderator: audit needs admin, so both tokens are refused at once.
    expect((await setRole(user.user.id, "moderator")).status).toBe(200);
    for (const token of [user.token, adminSession.token]) {
      const before = await snapshot();
      await expectError(await auditLog(token), 403, "FORBIDDEN");
      expect(await snapshot()).toEqual(before);
    }
    // Back to user: still refused, and admin acts (PATCH) are refused too, changing nothing.
    expect((await setRole(user.user.id, "user")).status).toBe(200);
    const before = await snapshot();
    await expectError(await auditLog(adminSession.token), 403, "FORBIDDEN");
    const escalate = await fetch(`${t.url}/api/users/${user.user.id}`, {
      method: "PATCH",
      headers: { ...jsonHeaders, ...bearer(adminSession.token) },
      body: JSON.stringify({ role: "admin" }),
    });
    await expectError(escalate, 403, "FORBIDDEN");
    expect(await snapshot()).toEqual(before);

    // Role changes neither end sessions nor cut sockets.
    expect((await sessionsOf(user.user.id)).every((s) => s.revoked_at === null)).toBe(true);
    await expectRoundTrip(socket);
    const changes = await auditRows("role_change", user.user.id);
    expect(changes.map((r) => [r.actor_id, r.meta])).toEqual([
      [admin.user.id, { from: "user", to: "admin" }],
      [admin.user.id, { from: "admin", to: "moderator" }],
      [admin.user.id, { from: "moderator", to: "user" }],
    ]);
  });
});

// ---------------------------------------------------------------------------------------
// 8. Banned users

describe("a banned user", () => {
  let banned: Registered;
  let spare: Registered;
  let sockets: ChatClient[];
  let cut: Promise<string>[];

  beforeAll(async () => {
    banned = await t.register();
    spare = await newSession(banned);
    sockets = [await t.connect(banned.token, "websocket"), await t.connect(spare.token, "polling")];
    cut = sockets.map((s) => disconnected(s));
    const res = await fetch(`${t.url}/api/users/${banned.user.id}/ban`, {
      method: "POST",
      headers: { ...jsonHeaders, ...bearer(admin.token) },
      body: JSON.stringify({ reason: "spam" }),
    });
    expect(res.status).toBe(200);
  });

  test("is disconnected at once, and every session ends (reason 'ban')", async () => {
    expect(await Promise.all(cut)).toEqual(["io server disconnect", "io server disconnect"]);
    const sessions = await sessionsOf(banned.user.id);
    expect(sessions.map((s) => s.revoked_reason)).toEqual(["ban", "ban"]);
  });

  test("refresh → 403 BANNED; no token is spent or issued", async () => {
    for (const session of [banned, spare]) {
      const before = await snapshot();
      const { error } = await expectError(await refresh(session.refreshToken), 403, "BANNED");
      expect(error.details).toBeUndefined();
      expect(await snapshot()).toEqual(before);
    }
  });

  test("old access tokens → 403 BANNED on REST; the handshake says Unauthorized", async () => {
    for (const session of [banned, spare]) {
      await expectError(await me(session.token), 403, "BANNED");
      for (const transport of transports) await expectHandshakeRefused(session.token, transport);
    }
  });

  test("login with the right password → 403 BANNED, and no session is created", async () => {
    const before = await snapshot();
    const { error } = await expectError(await login(banned.user.username), 403, "BANNED");
    expect(error.details).toBeUndefined();
    expect(await snapshot()).toEqual(before);
  });

  test("login with a wrong password → 401 INVALID_CREDENTIALS, the same answer as for anyone: the ban is not revealed", async () => {
    const someone = await t.register();
    const answers: Json[] = [];
    for (const [username, pw] of [
      [banned.user.username, "wrong password!"],
      [someone.user.username, "wrong password!"],
      [uniqueName("nobody"), "wrong password!"],
    ] as const) {
      const before = await snapshot();
      const body = await expectError(await login(username, pw), 401, "INVALID_CREDENTIALS");
      answers.push(body);
      const after = await snapshot();
      // Only the failure is recorded (one audit row); no session, token or user changes.
      expect({ ...after, audit: undefined }).toEqual({ ...before, audit: undefined });
      expect(after.audit.n).toBe(before.audit.n + 1);
    }
    expect(answers[0]).toEqual(answers[1]);
    expect(answers[0]).toEqual(answers[2]);
    const [failure] = await sql`SELECT action, actor_id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET 2`;
    expect(failure).toEqual({ action: "login_failed", actor_id: banned.user.id });
  });

  test("after an unban: old sessions stay ended, a new login works", async () => {
    const res = await fetch(`${t.url}/api/users/${banned.user.id}/unban`, { method: "POST", headers: bearer(admin.token) });
    expect(res.status).toBe(200);
    await expectError(await refresh(banned.refreshToken), 401, "UNAUTHORIZED");
    await expectError(await me(banned.token), 401, "UNAUTHORIZED");
    const fresh = await newSession(banned);
    await expectAccepted(fresh.token, banned);
    await expectRoundTrip(await connect(fresh.token, "polling"));
  });
});
