import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { expectError } from "./helpers/expect-error.ts";
import { expectRateLimited, metricValue } from "./helpers/rate-limited.ts";
import { startTestServer, uniqueName, type TestServer } from "./helpers/server.ts";
import { scrapeMetrics, TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §7 "Failed logins": an attacker who knows a username (they are public) must not be able
// to lock its owner out. Failures are counted per (folded username, client address) and refused
// with 429 at that address only; failures from many addresses slow the account's logins down
// (LOGIN_BACKOFF_DELAY_MS before each answer) but never refuse them. Two or more addresses come
// from X-Forwarded-For with TRUST_PROXY=1, as behind a proxy.

const password = "correct horse battery";
const wrong = "wrong password!";
const window = 60;

const globalEnv = { TRUST_PROXY: "1", RATE_LIMIT_LOGIN_FAILURES: "3/1m", RATE_LIMIT_LOGIN_FAILURES_GLOBAL: "6/1m", LOGIN_BACKOFF_DELAY_MS: "1000" };
// Two instances sharing the local Redis (under a prefix of this run's own) and one database.
const redisPrefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
const [pairServer, shortServer, globalServer, shared1] = await Promise.all([
  startTestServer({ env: { TRUST_PROXY: "1", RATE_LIMIT_LOGIN_FAILURES: "3/1m" } }),
  // One failure per window, so the window can be waited out quickly.
  startTestServer({ env: { TRUST_PROXY: "1", RATE_LIMIT_LOGIN_FAILURES: "1/4s" } }),
  startTestServer({ env: globalEnv }),
  startTestServer({ env: globalEnv, redisPrefix }),
]);
const shared2 = await startTestServer({ env: globalEnv, redisPrefix, database: shared1.database });

/** A fresh documentation address (RFC 5737) per call, so no two tests share a budget. */
let ipCounter = 0;
const freshIp = () => `203.0.113.${++ipCounter}`;

const login = (server: TestServer, username: string, pass: string, ip: string) =>
  fetch(`${server.url}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-for": ip },
    body: JSON.stringify({ username, password: pass }),
  });
const fail = async (server: TestServer, username: string, ip: string) => expectError(await login(server, username, wrong, ip), 401, "INVALID_CREDENTIALS");
async function succeed(server: TestServer, username: string, ip: string) {
  const res = await login(server, username, password, ip);
  expect({ status: res.status, text: await res.text() }).toMatchObject({ status: 200 });
}

async function sessionCount(server: TestServer, userId: number): Promise<number> {
  const [row] = await server.database.sql`SELECT count(*)::int AS n FROM sessions WHERE user_id = ${userId}`;
  return (row as { n: number }).n;
}

async function failedLoginRows(server: TestServer, usernameKey: string): Promise<number> {
  const [row] = await server.database.sql`SELECT count(*)::int AS n FROM audit_log WHERE action = 'login_failed' AND meta->>'username' = ${usernameKey}`;
  return (row as { n: number }).n;
}

async function delayedLogins(server: TestServer): Promise<number> {
  const text = await scrapeMetrics(server.url);
  const value = metricValue(text, "chat_login_delayed_total");
  if (value === undefined) throw new Error("no chat_login_delayed_total in /metrics");
  return value;
}

// ---------------------------------------------------------------------------------------------

describe("failed logins per (username, address) (RATE_LIMIT_LOGIN_FAILURES=3/1m)", () => {
  test("an attacker who spends one address's budget is refused there only: the owner, from another address, logs in", async () => {
    const server = pairServer;
    const owner = (await server.register(uniqueName("owner"), password)).user;
    const [attacker, home] = [freshIp(), freshIp()];

    for (let i = 0; i < 3; i++) await fail(server, owner.username, attacker);
    await expectRateLimited(await login(server, owner.username, wrong, attacker), window);
    // Refused before the password is looked at: the right one is no use from there either.
    const sessions = await sessionCount(server, owner.id);
    await expectRateLimited(await login(server, owner.username, password, attacker), window);
    expect(await sessionCount(server, owner.id)).toBe(sessions);

    await succeed(server, owner.username, home);
    expect(await sessionCount(server, owner.id)).toBe(sessions + 1);
    // The owner's success resets the owner's address only, not the attacker's.
    await expectRateLimited(await login(server, owner.username, password, attacker), window);
    // And the owner's address still has its own full budget: two failures, then a success.
    await fail(server, owner.username, home);
    await fail(server, owner.username, home);
    await succeed(server, owner.username, home);
  });

  test("parallel attempts from one address cannot overshoot the budget: 12 at once → exactly 3 checked (401), 9 refused (429)", async () => {
    const server = pairServer;
    const owner = (await server.register(uniqueName("racer"), password)).user;
    const attacker = freshIp();
    const responses = await Promise.all(Array.from({ length: 12 }, () => login(server, owner.username, wrong, attacker)));
    const statuses = responses.map((r) => r.status).sort();
    await Promise.all(responses.map((r) => r.body?.cancel()));
    expect(statuses).toEqual([...Array(3).fill(401), ...Array(9).fill(429)]);
    expect(await failedLoginRows(server, owner.username.toLowerCase())).toBe(3);
    await succeed(server, owner.username, freshIp());
  });

  test("the username counts case-insensitively within an address; other addresses are unaffected", async () => {
    const server = pairServer;
    const owner = (await server.register(uniqueName("Casey"), password)).user;
    const spellings = [owner.username, owner.username.toLowerCase(), owner.username.toUpperCase()];
    expect(new Set(spellings).size).toBe(3);
    const attacker = freshIp();
    for (const spelling of spellings) await fail(server, spelling, attacker);
    for (const spelling of spellings) await expectRateLimited(await login(server, spelling, password, attacker), window);
    for (const spelling of spellings) await succeed(server, spelling, freshIp());
  });

  test("an unknown username is limited the same way (no hint that it does not exist)", async () => {
    const server = pairServer;
    const ghost = uniqueName("ghost");
    const attacker = freshIp();
    for (let i = 0; i < 3; i++) await fail(server, ghost, attacker);
    await expectRateLimited(await login(server, ghost, password, attacker), window);
    await fail(server, ghost, freshIp());
  });

  test("a successful login resets its address's count: 2 failures, success, 2 failures → a 3rd failure is still 401, then 429", async () => {
    const server = pairServer;
    const owner = (await server.register(uniqueName("reset"), password)).user;
    const ip = freshIp();
    await fail(server, owner.username, ip);
    await fail(server, owner.username, ip);
    await succeed(server, owner.username, ip);
    await fail(server, owner.username, ip);
    await fail(server, owner.username, ip);
    // Four failures in the window, but only two since the success: not refused.
    await fail(server, owner.username, ip);
    // Three since the success: refused, so the count still counts after a reset.
    await expectRateLimited(await login(server, owner.username, password, ip), window);
  });

  test("once Retry-After seconds have passed, the address may try again (RATE_LIMIT_LOGIN_FAILURES=1/4s)", async () => {
    const server = shortServer;
    const owner = (await server.register(uniqueName("patient"), password)).user;
    const ip = freshIp();
    await fail(server, owner.username, ip);
    const retryAfter = await expectRateLimited(await login(server, owner.username, password, ip), 4);
    await Bun.sleep(retryAfter * 1000 + 150);
    await succeed(server, owner.username, ip);
  });

  test("a spent address may still log in to other accounts", async () => {
    const server = pairServer;
    const [target, mine] = [(await server.register(uniqueName("target"), password)).user, (await server.register(uniqueName("mine"), password)).user];
    const shared = freshIp();
    for (let i = 0; i < 3; i++) await fail(server, target.username, shared);
    await expectRateLimited(await login(server, target.username, password, shared), window);
    await succeed(server, mine.username, shared);
  });
});

// ---------------------------------------------------------------------------------------------

// Serially: the test reads the server's delayed-login counter, which every login on it may move.
describe("failures from many addresses (RATE_LIMIT_LOGIN_FAILURES_GLOBAL=6/1m, LOGIN_BACKOFF_DELAY_MS=1000)", () => {
  test("slow the account's logins down but never refuse them: the owner gets 200 after the delay, each spent address 429 at once", async () => {
    const server = globalServer;
    const owner = (await server.register(uniqueName("popular"), password)).user;
    const bystander = (await server.register(uniqueName("bystander"), password)).user;
    const attackers = [freshIp(), freshIp(), freshIp()];

    // Six failures (two addresses' budgets) are answered at once; from the 7th on, each waits.
    const before = await delayedLogins(server);
    for (const ip of attackers.slice(0, 2)) for (let i = 0; i < 3; i++) await fail(server, owner.username, ip);
    expect(await delayedLogins(server)).toBe(before);
    const seventh = performance.now();
    await fail(server, owner.username, attackers[2]!);
    expect(performance.now() - seventh).toBeGreaterThanOrEqual(1000 - 50);
    expect(await delayedLogins(server)).toBe(before + 1);

    // A spent address is refused straight away (the refusal costs nothing to wait for).
    for (const ip of attackers.slice(0, 2)) await expectRateLimited(await login(server, owner.username, password, ip), window);
    expect(await delayedLogins(server)).toBe(before + 1);

    // The owner, from an address of their own: in, a second late.
    const started = performance.now();
    await succeed(server, owner.username, freshIp());
    const ownerMs = performance.now() - started;
    expect(ownerMs).toBeGreaterThanOrEqual(1000 - 50);
    expect(await delayedLogins(server)).toBe(before + 2);

    // A new address guessing is slowed and answered, not refused; the owner's success did not lift the back-off.
    await fail(server, owner.username, freshIp());
    expect(await delayedLogins(server)).toBe(before + 3);

    // Another account is not slowed, even from an address spent on this one.
    await succeed(server, bystander.username, attackers[0]!);
    expect(await delayedLogins(server)).toBe(before + 3);
    console.log(`owner login under attack from 3 addresses: 200 in ${Math.round(ownerMs)} ms (back-off 1000 ms)`);
  });
});

// ---------------------------------------------------------------------------------------------

describe("with two instances sharing Redis (api.md §9): both counts are shared", () => {
  test("an address spent on one instance is refused on the other; failures spread over both slow the account down on both", async () => {
    const owner = (await shared1.register(uniqueName("shared"), password)).user;
    const [a, b, c] = [freshIp(), freshIp(), freshIp()];
    for (let i = 0; i < 3; i++) await fail(shared1, owner.username, a);
    await expectRateLimited(await login(shared2, owner.username, password, a), window);
    // Three more from another address, on the other instance: six in all, the username's budget.
    for (let i = 0; i < 3; i++) await fail(shared2, owner.username, b);
    const [before1, before2] = [await delayedLogins(shared1), await delayedLogins(shared2)];
    await succeed(shared1, owner.username, c);
    await fail(shared2, owner.username, c);
    expect([await delayedLogins(shared1), await delayedLogins(shared2)]).toEqual([before1 + 1, before2 + 1]);
    await expectRateLimited(await login(shared1, owner.username, password, b), window);
  });
});
