import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { expectError } from "./helpers/expect-error.ts";
import { expectRateLimited } from "./helpers/rate-limited.ts";
import { sendWithAck, startTestServer, uniqueName, type ChatClient, type Json, type Registered, type TestServer } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §1 and §7: POST /api/auth/password {currentPassword, newPassword} (bearer). The new
// password under the registration policy; a wrong current password is a failed login (counted
// per username and address); on success the calling session carries on and every other session
// of the user ends at once (REST, refresh and sockets), in the audit trail as password_changed.

const password = "correct horse battery";
const newPassword = "a new horse, a new battery";

// TRUST_PROXY=1 so a test can come from an address of its own (X-Forwarded-For).
const t = await startTestServer({ env: { TRUST_PROXY: "1", RATE_LIMIT_LOGIN_FAILURES: "3/1m" } });

let ipCounter = 0;
const freshIp = () => `198.51.100.${++ipCounter}`;

function post(server: TestServer, path: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
}
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const change = (token: string, body: unknown, ip = freshIp()) => post(t, "/api/auth/password", body, { ...bearer(token), "x-forwarded-for": ip });
const login = (username: string, pw: string, ip = freshIp()) => post(t, "/api/auth/login", { username, password: pw }, { "x-forwarded-for": ip });
const refresh = (refreshToken: string) => post(t, "/api/auth/refresh", { refreshToken });
const me = (token: string) => fetch(`${t.url}/api/users/me`, { headers: bearer(token) });

async function newSession(username: string, pw = password): Promise<Registered> {
  const res = await login(username, pw);
  expect({ status: res.status, text: res.status === 200 ? "" : await res.text() }).toEqual({ status: 200, text: "" });
  return res.json() as Promise<Registered>;
}

const sidOf = (token: string): string => JSON.parse(atob(token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/"))).sid;

async function sessionRows(userId: number): Promise<{ id: string; revoked_reason: string | null }[]> {
  return t.database.sql`SELECT id::text AS id, revoked_reason FROM sessions WHERE user_id = ${userId} ORDER BY id`;
}

async function auditRows(userId: number, action: string): Promise<Json[]> {
  return t.database.sql`SELECT actor_id, action, target_type, target_id, ip, meta FROM audit_log WHERE actor_id = ${userId} AND action = ${action} ORDER BY id`;
}

const disconnected = (socket: ChatClient) => new Promise<string>((resolve) => socket.once("disconnect", (reason) => resolve(reason)));

// ---------------------------------------------------------------------------------------------

describe("POST /api/auth/password", () => {
  test("204: the new password logs in and the old one does not; this session carries on; every other one ends, its sockets cut; audited", async () => {
    const caller = await t.register(uniqueName("changer"), password);
    const [other1, other2] = [await newSession(caller.user.username), await newSession(caller.user.username)];
    const bystander = await t.register(uniqueName("bystander"), password);
    const mine = await t.connect(caller.token, "websocket");
    const theirs = [await t.connect(other1.token, "websocket"), await t.connect(other2.token, "polling")];
    const bystanderSocket = await t.connect(bystander.token, "polling");
    const cut = theirs.map(disconnected);
    const ip = freshIp();

    const res = await change(caller.token, { currentPassword: password, newPassword }, ip);
    expect({ status: res.status, text: await res.text() }).toEqual({ status: 204, text: "" });

    expect(await Promise.all(cut)).toEqual(["io server disconnect", "io server disconnect"]);
    for (const ended of [other1, other2]) {
      await expectError(await me(ended.token), 401, "UNAUTHORIZED");
      await expectError(await refresh(ended.refreshToken), 401, "UNAUTHORIZED");
    }
    // The caller's session: its token, its socket and its refresh token all still work.
    expect((await me(caller.token)).status).toBe(200);
    expect(await sendWithAck(mine, { content: "still here" })).toMatchObject({ ok: true });
    expect(mine.connected).toBe(true);
    expect((await refresh(caller.refreshToken)).status).toBe(200);
    // Someone else's session is untouched.
    expect(bystanderSocket.connected).toBe(true);
    expect((await me(bystander.token)).status).toBe(200);

    const reasons = Object.fromEntries((await sessionRows(caller.user.id)).map((r) => [r.id, r.revoked_reason]));
    expect(reasons).toEqual({ [sidOf(caller.token)]: null, [sidOf(other1.token)]: "password-change", [sidOf(other2.token)]: "password-change" });
    expect(await auditRows(caller.user.id, "password_changed")).toEqual([
      { actor_id: caller.user.id, action: "password_changed", target_type: "user", target_id: String(caller.user.id), ip, meta: { sessions: 2 } },
    ]);

    await expectError(await login(caller.user.username, password), 401, "INVALID_CREDENTIALS");
    await newSession(caller.user.username, newPassword);
    mine.disconnect();
  });

  test("a wrong current password: 401 INVALID_CREDENTIALS, nothing changes; audited as a failed login; counted per address: the 4th is 429, another address still changes it", async () => {
    const caller = await t.register(uniqueName("guesser"), password);
    const other = await newSession(caller.user.username);
    const attacker = freshIp();
    for (let i = 0; i < 3; i++) {
      await expectError(await change(caller.token, { currentPassword: `wrong guess ${i}`, newPassword }, attacker), 401, "INVALID_CREDENTIALS");
    }
    // The per-address budget is shared with login: spent for this username from here, whatever is sent.
    await expectRateLimited(await change(caller.token, { currentPassword: password, newPassword }, attacker), 60);
    await expectRateLimited(await login(caller.user.username, password, attacker), 60);

    expect((await me(other.token)).status).toBe(200);
    await newSession(caller.user.username, password);
    const failed = await auditRows(caller.user.id, "login_failed");
    expect(failed).toHaveLength(3);
    for (const row of failed) {
      expect(row).toEqual({ actor_id: caller.user.id, action: "login_failed", target_type: "user", target_id: String(caller.user.id), ip: attacker, meta: { username: caller.user.username.toLowerCase(), via: "password_change" } });
    }
    expect(await auditRows(caller.user.id, "password_changed")).toEqual([]);

    expect((await change(caller.token, { currentPassword: password, newPassword })).status).toBe(204);
    await expectError(await me(other.token), 401, "UNAUTHORIZED");
  });

  test("two changes at once from two sessions: exactly one wins; its password works, the other's and the old one do not", async () => {
    const first = await t.register(uniqueName("racer"), password);
    const second = await newSession(first.user.username);
    const candidates = ["the first new one", "the second new one"];
    const responses = await Promise.all([
      change(first.token, { currentPassword: password, newPassword: candidates[0] }),
      change(second.token, { currentPassword: password, newPassword: candidates[1] }),
    ]);
    const statuses = responses.map((r) => r.status);
    expect([...statuses].sort()).toEqual([204, 401]);
    const loser = statuses.indexOf(401);
    // Refused as a stale password, or, if the winner ended the loser's session first, as an ended session.
    expect(["INVALID_CREDENTIALS", "UNAUTHORIZED"]).toContain(((await responses[loser]!.json()) as Json).error.code);
    await newSession(first.user.username, candidates[1 - loser]!);
    await expectError(await login(first.user.username, candidates[loser]!), 401, "INVALID_CREDENTIALS");
    await expectError(await login(first.user.username, password), 401, "INVALID_CREDENTIALS");
  });

  const invalid: [label: string, body: unknown, path: string][] = [
    ["no currentPassword", { newPassword }, "currentPassword"],
    ["no newPassword", { currentPassword: password }, "newPassword"],
    ["a newPassword of 7 characters", { currentPassword: password, newPassword: "1234567" }, "newPassword"],
    ["a newPassword of 129 characters", { currentPassword: password, newPassword: "x".repeat(129) }, "newPassword"],
    ["a newPassword with NUL", { currentPassword: password, newPassword: "abc\u0000defgh" }, "newPassword"],
    ["a newPassword with an unpaired surrogate", { currentPassword: password, newPassword: "abcdefgh\ud800" }, "newPassword"],
    ["a number for newPassword", { currentPassword: password, newPassword: 12345678 }, "newPassword"],
    ["the same password again", { currentPassword: password, newPassword: password }, "newPassword"],
    ["the same password in another normalisation form", { currentPassword: "Ame\u0301lie-1234", newPassword: "Am\u00e9lie-1234" }, "newPassword"],
    ["null", null, "(root)"],
    ["an array", [password, newPassword], "(root)"],
  ];
  describe("refused bodies", () => {
    let caller: Registered;
    beforeAll(async () => {
      caller = await t.register(uniqueName("invalid"), password);
    });
    test.each(invalid)("%s → 400 VALIDATION_FAILED naming the field", async (_label, body, path) => {
      await expectError(await change(caller.token, body), 400, "VALIDATION_FAILED", path);
    });
    test("after them all, the password is unchanged and no session ended", async () => {
      expect((await me(caller.token)).status).toBe(200);
      await newSession(caller.user.username, password);
      expect(await auditRows(caller.user.id, "password_changed")).toEqual([]);
    });
  });

  test.each([
    ["no Authorization header", {}],
    ["a garbage bearer token", { authorization: "Bearer garbage.garbage.garbage" }],
  ] as [string, Record<string, string>][])("%s → 401 UNAUTHORIZED", async (_label, headers) => {
    await expectError(await post(t, "/api/auth/password", { currentPassword: password, newPassword }, headers), 401, "UNAUTHORIZED");
  });
});
