import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { decode } from "hono/jwt";
import { createTokenSigner } from "../src/lib/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { expectError } from "./helpers/expect-error.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { startTestServer, testJwtSecret, uniqueName, type Registered } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Verified access tokens, cached (src/lib/tokens.ts: the signature checked once, the expiry on
// every use), against the real server: a cached token still expires on time and is refused at
// once when its session ends or its user is banned.

const adminName = uniqueName("admin");
const t = await startTestServer({ env: { ADMIN_USERNAMES: adminName } });
const api = apiFor(t);
// Registered under a name in ADMIN_USERNAMES: an admin, for the ban.
const admin = await t.register(adminName);

/** Sockets opened by one test (websocket), closed after it. */
const { connect } = socketTracker(t);

// ---------------------------------------------------------------------------------------
// Verified tokens

describe("a token verified once is still checked on every use", () => {
  const protectedPaths = ["/api/users/me", "/api/messages?limit=1", "/api/users?limit=1"];

  async function expectAccepted(token: string): Promise<void> {
    for (const path of protectedPaths) {
      const res = await api("GET", path, token);
      expect({ path, status: res.status }).toEqual({ path, status: 200 });
      await res.body?.cancel();
    }
  }

  async function expectRefused(token: string, status: number, code: string): Promise<void> {
    for (const path of protectedPaths) await expectError(await api("GET", path, token), status, code);
  }

  test.each([1, 2])("a token with a %i s lifetime and a live session: accepted (and cached) while valid, 401 from the second it expires", async (ttl) => {
    const user = await t.register();
    const sid = decode(user.token).payload.sid as string;
    // Signed just after a second starts, so the token has its whole lifetime to be used in.
    await Bun.sleep(1_000 - (Date.now() % 1_000) + 10);
    const token = await createTokenSigner(testJwtSecret, ttl).signAccess({ id: user.user.id, username: user.user.username, role: "user", sessionId: sid });
    const { iat, exp } = decode(token).payload as { iat: number; exp: number };
    expect(exp - iat).toBe(ttl);
    for (let i = 0; i < 3; i++) await expectAccepted(token);
    // Still valid when last accepted, so the refusals below are about expiry alone.
    expect(Date.now()).toBeLessThan(exp * 1_000);
    await Bun.sleep(exp * 1_000 - Date.now() + 20);
    await expectRefused(token, 401, "UNAUTHORIZED");
    await expect(connect({ ...user, token })).rejects.toThrow();
    // The session itself is fine: the registration's token still works.
    await expectAccepted(user.token);
  });

  const revocations: [label: string, revoke: (user: Registered, other: Registered) => Promise<void>, status: number, code: string, otherSessionSurvives: boolean][] = [
    [
      "logout (POST /api/auth/logout)",
      async (user) => void (await expectStatus(await api("POST", "/api/auth/logout", undefined, { refreshToken: user.refreshToken }), 204)),
      401,
      "UNAUTHORIZED",
      true,
    ],
    ["logout everywhere (POST /api/auth/logout-all)", async (user) => void (await expectStatus(await api("POST", "/api/auth/logout-all", user.token), 204)), 401, "UNAUTHORIZED", false],
    [
      "a ban by an admin",
      async (user) => {
        await expectStatus(await api("POST", `/api/users/${user.user.id}/ban`, admin.token, { reason: "test" }), 200);
      },
      403,
      "BANNED",
      false,
    ],
  ];

  test.each(revocations)("%s: the token, cached from earlier uses, is refused at once", async (_label, revoke, status, code, otherSessionSurvives) => {
    const user = await t.register();
    const login = (await expectStatus(await api("POST", "/api/auth/login", undefined, { username: user.user.username, password: "correct horse battery" }), 200)) as Registered;
    const other = { ...user, token: login.token, refreshToken: login.refreshToken };
    for (let i = 0; i < 3; i++) await expectAccepted(user.token);
    await expectAccepted(other.token);
    await revoke(user, other);
    await expectRefused(user.token, status, code);
    if (otherSessionSurvives) await expectAccepted(other.token);
    else await expectRefused(other.token, status, code);
  });
});

