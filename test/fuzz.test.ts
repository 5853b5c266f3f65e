import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { sign } from "hono/jwt";
import { io as ioClient } from "socket.io-client";
import { createTestDatabase } from "./helpers/db.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import {
  Bytes,
  errorObjectProblem,
  fuzzSeed,
  headerValue,
  hostileJson,
  inPool,
  mib,
  mutatedBody,
  mutatedTree,
  Obj,
  preview,
  queryString,
  rawBody,
  residentBytes,
  settledResidentBytes,
  toText,
  toValue,
  answerProblem,
  handPickedValues,
  type Json,
} from "./helpers/hostile.ts";
import { productionEnv, startServerProcess } from "./helpers/process.ts";
import { loadConfig } from "../src/config.ts";
import { maxRequestBodyBytes } from "../src/server.ts";
import type { ChatClient } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 7, hostile traffic: thousands of random and mutated REST bodies, query strings, header
// values, raw byte bodies, paths and Socket.IO payloads against the real service in a child
// process (`bun src/index.ts`, as production runs it). Every answer is a 2xx (the input happened
// to be valid) or a 4xx in the error shape of api.md §0, never a 5xx; refused socket payloads are
// acked or reported as errors, never broadcast, and never cost the connection; the process stays
// up, logs no error, and its memory stays steady. Malformed packets and HTTP are in
// fuzz-protocol.test.ts. A failure prints the seed: FUZZ_SEED=<seed> replays the same inputs.

console.log(`fuzz seed ${fuzzSeed} (FUZZ_SEED=${fuzzSeed} replays it)`);

const password = "correct horse battery";
const database = await createTestDatabase();
const adminName = `fuzzadmin_${crypto.randomUUID().slice(0, 6)}`;
// TRUST_PROXY=1 so X-Forwarded-For is parsed rather than ignored; the limits stay off (productionEnv),
// so a 429 never hides what validation would answer.
const env = productionEnv(database.url, { ADMIN_USERNAMES: adminName, TRUST_PROXY: "1" });
const service = await startServerProcess(env);
const url = service.url;
// A body past Bun's maxRequestBodySize is refused by Bun itself with a bare 413 before the service
// sees it (docs/api.md §7; test/handshake-limits.test.ts): deep nesting can get there.
const bunBodyLimit = maxRequestBodyBytes(loadConfig(env));
afterAll(() => service.proc.kill("SIGKILL"));

type AuthResult = { token: string; refreshToken: string; user: { id: number; username: string; role: string } };

let nameCounter = 0;
const name = (prefix: string) => `${prefix}_${++nameCounter}_${crypto.randomUUID().slice(0, 6)}`;

async function post(path: string, token: string | undefined, body: unknown, status: number): Promise<any> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status !== status) throw new Error(`POST ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

const register = (username = name("fuzz")): Promise<AuthResult> => post("/api/auth/register", undefined, { username, password }, 201);
const login = (username: string): Promise<AuthResult> => post("/api/auth/login", undefined, { username, password }, 200);

// Who the fuzz acts as, and what it acts on. The socket rounds register users of their own, so
// nothing the REST fuzz does (bans, role changes, invitations to private channels) reaches them.
const admin = await register(adminName);
expect(admin.user.role).toBe("admin");
const fuzzer = await register();
const target = await register();
const castaway = await register();
// Whose password the password-change bodies change (once; the current one is wrong after that).
const changer = await register();
// Sessions of the fuzzer's whose refresh tokens the refresh and logout bodies carry (not the one it calls with).
const [spareForRefresh, spareForLogout] = [await login(fuzzer.user.username), await login(fuzzer.user.username)];
const ownMessage = (await post("/api/messages", fuzzer.token, { content: "the fuzzer's own message" }, 201)).id as number;
const targetMessage = (await post("/api/messages", target.token, { content: "someone else's message" }, 201)).id as number;
const privateChannel = (await post("/api/channels", fuzzer.token, { name: "fuzz private", kind: "private" }, 201)).id as number;
const publicChannel = (await post("/api/channels", fuzzer.token, { name: "fuzz public", kind: "public" }, 201)).id as number;

// ---------------------------------------------------------------------------------------------
// Requests and the check of their answers.

interface FuzzRequest {
  label: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
}

interface Failure {
  label: string;
  problem: string;
  request: string;
  answer: string;
}

/** Sends `requests` (at most `concurrency` at once) and returns those whose answers break api.md §0. */
async function sendAll(requests: FuzzRequest[], concurrency = 8): Promise<Failure[]> {
  const failures: Failure[] = [];
  await inPool(requests, concurrency, async (req) => {
    const show = () => `${req.method} ${preview(req.path, 200)} ${preview(req.headers, 300)} ${req.body === undefined ? "" : preview(req.body)}`;
    let res: Response;
    try {
      res = await fetch(`${url}${req.path}`, { method: req.method, headers: req.headers, body: req.body, redirect: "manual", signal: AbortSignal.timeout(15_000) });
    } catch (error) {
      failures.push({ label: req.label, problem: `no answer: ${error}`, request: show(), answer: "" });
      return;
    }
    const text = await res.text();
    const bytes = req.body === undefined ? 0 : typeof req.body === "string" ? Buffer.byteLength(req.body) : req.body.byteLength;
    const pastBun = bytes > bunBodyLimit;
    const problem = pastBun ? (res.status === 413 ? undefined : `status ${res.status} for a body past Bun's ${bunBodyLimit} bytes (a bare 413 expected)`) : answerProblem(res.status, res.headers, text, req.method);
    if (problem) failures.push({ label: req.label, problem, request: show(), answer: `${res.status} ${preview(text)}` });
  });
  return failures;
}

function expectNoFailures(what: string, count: number, failures: Failure[], seed: number): void {
  if (failures.length === 0) return;
  const shown = failures.slice(0, 8).map((f) => `- [${f.label}] ${f.problem}\n  request: ${f.request}\n  answer: ${f.answer}`);
  throw new Error(`${what}: ${failures.length} of ${count} answers broke the contract (seed ${seed}; FUZZ_SEED=${fuzzSeed} replays the run):\n${shown.join("\n")}`);
}

const json = (token?: string): Record<string, string> => ({ "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) });

/** Path ids: mostly the valid one, sometimes junk a strict parser must refuse. */
const junkIds = ["0", "-1", "1e3", "0x10", "%201", "2147483647", "2147483648", "99999999999999999999", "abc", "%00", "%ZZ", "..", "__proto__", "constructor", "1.5", "١٢", "%F0%9F%92%A5", "x".repeat(2000), "%2F"];
const pathId = (valid: number) => fc.oneof({ weight: 6, arbitrary: fc.constant(String(valid)) }, { weight: 1, arbitrary: fc.constantFrom(...junkIds) });

const bodyOptions = { maxHuge: 80_000, maxDepth: 30_000 };
/** fast-check's `sample`, seeded per section so a failure names the inputs that replay it. */
const sample = <T>(arbitrary: fc.Arbitrary<T>, runs: number, seed: number): T[] => (runs <= 0 ? [] : fc.sample(arbitrary, { seed, numRuns: runs }));

// ---------------------------------------------------------------------------------------------
// The rounds. The warm-up runs each at a quarter of the size, so the memory read after it already
// includes whatever the service keeps by design (caches, pools, JIT, a grown heap) and what the
// main rounds add is growth.

const warmUpScale = 0.25;

interface BodyRoute {
  label: string;
  method: string;
  path: (id: string) => string;
  id?: number;
  token?: string;
  base: Record<string, Json>;
  runs: number;
  /** Routes that hash or verify a password (argon2id, 64 MiB each) run two at a time; see also "add member". */
  concurrency?: number;
}

const bodyRoutes = (): BodyRoute[] => [
  { label: "register", method: "POST", path: () => "/api/auth/register", base: { username: "fuzz_register", password }, runs: 120, concurrency: 2 },
  { label: "login", method: "POST", path: () => "/api/auth/login", base: { username: fuzzer.user.username, password }, runs: 120, concurrency: 2 },
  {
    label: "change password",
    method: "POST",
    path: () => "/api/auth/password",
    token: changer.token,
    base: { currentPassword: password, newPassword: "a fuzzed new password" },
    runs: 120,
    concurrency: 2,
  },
  { label: "refresh", method: "POST", path: () => "/api/auth/refresh", base: { refreshToken: spareForRefresh.refreshToken }, runs: 200 },
  { label: "logout", method: "POST", path: () => "/api/auth/logout", base: { refreshToken: spareForLogout.refreshToken }, runs: 200 },
  {
    label: "send message",
    method: "POST",
    path: () => "/api/messages",
    token: fuzzer.token,
    base: { content: "hello from the fuzz", channelId: 1, clientId: "fuzz-client-id", userId: fuzzer.user.id },
    runs: 350,
  },
  { label: "edit message", method: "PATCH", path: (id) => `/api/messages/${id}`, id: ownMessage, token: fuzzer.token, base: { content: "edited by the fuzz" }, runs: 250 },
  { label: "create channel", method: "POST", path: () => "/api/channels", token: fuzzer.token, base: { name: "fuzz channel", kind: "public" }, runs: 250 },
  // One at a time: concurrent invitations of one user race (see "the same membership change many times at once").
  { label: "add member", method: "POST", path: (id) => `/api/channels/${id}/members`, id: privateChannel, token: fuzzer.token, base: { userId: target.user.id }, runs: 200, concurrency: 1 },
  { label: "read marker", method: "POST", path: (id) => `/api/channels/${id}/read`, id: 1, token: fuzzer.token, base: { messageId: ownMessage }, runs: 200 },
  { label: "set role", method: "PATCH", path: (id) => `/api/users/${id}`, id: target.user.id, token: admin.token, base: { role: "moderator" }, runs: 200 },
  { label: "ban", method: "POST", path: (id) => `/api/users/${id}/ban`, id: target.user.id, token: admin.token, base: { reason: "fuzzing" }, runs: 200 },
];

/** Routes that take no body: whatever body is sent must not matter, or must be refused in the error shape. */
const bodylessRoutes = (): { label: string; method: string; path: (id: string) => string; id: number; token: string }[] => [
  { label: "join", method: "POST", path: (id) => `/api/channels/${id}/join`, id: publicChannel, token: fuzzer.token },
  { label: "leave", method: "POST", path: (id) => `/api/channels/${id}/leave`, id: publicChannel, token: fuzzer.token },
  { label: "direct", method: "POST", path: (id) => `/api/direct/${id}`, id: target.user.id, token: fuzzer.token },
  { label: "unban", method: "POST", path: (id) => `/api/users/${id}/unban`, id: target.user.id, token: admin.token },
  { label: "delete message", method: "DELETE", path: (id) => `/api/messages/${id}`, id: targetMessage, token: fuzzer.token },
  // Its own user: a valid call ends every session of the caller.
  { label: "logout-all", method: "POST", path: () => "/api/auth/logout-all", id: 0, token: castaway.token },
];

async function bodiesRound(scale: number, seed: number): Promise<{ count: number; failures: Failure[] }> {
  let count = 0;
  const failures: Failure[] = [];
  for (const [index, route] of bodyRoutes().entries()) {
    const arbitrary = fc.record({ id: route.id === undefined ? fc.constant("") : pathId(route.id), body: mutatedBody(route.base, bodyOptions) });
    const requests = sample(arbitrary, Math.round(route.runs * scale), seed + index).map(({ id, body }) => ({
      label: route.label,
      method: route.method,
      path: route.path(id),
      headers: json(route.token),
      body,
    }));
    count += requests.length;
    failures.push(...(await sendAll(requests, route.concurrency)));
  }
  return { count, failures };
}

async function bodylessRound(scale: number, seed: number): Promise<{ count: number; failures: Failure[] }> {
  const routes = bodylessRoutes();
  const arbitrary = fc.record({
    route: fc.constantFrom(...routes),
    id: fc.nat(),
    body: fc.oneof(hostileJson(bodyOptions).map(toText), rawBody()),
    contentType: fc.constantFrom("application/json", "application/json", "text/plain", "application/octet-stream"),
  });
  const requests = sample(arbitrary, Math.round(300 * scale), seed).map(({ route, id, body, contentType }) => {
    const ids = [String(route.id), ...junkIds];
    return {
      label: route.label,
      method: route.method,
      path: route.path(id % 4 === 0 ? ids[id % ids.length]! : String(route.id)),
      headers: { ...json(route.token), "content-type": contentType },
      body,
    };
  });
  // One at a time: concurrent joins and leaves of one channel race (see "the same membership change many times at once").
  return { count: requests.length, failures: await sendAll(requests, 1) };
}

const queryRoutes = (): { label: string; path: fc.Arbitrary<string>; token: string; keys: string[] }[] => [
  { label: "users", path: fc.constant("/api/users"), token: fuzzer.token, keys: ["limit", "after"] },
  { label: "history", path: fc.constant("/api/messages"), token: fuzzer.token, keys: ["limit", "before", "after"] },
  { label: "search", path: fc.constant("/api/messages/search"), token: fuzzer.token, keys: ["q", "q", "channelId", "before", "limit"] },
  { label: "audit", path: fc.constant("/api/admin/audit"), token: admin.token, keys: ["action", "actorId", "before", "limit"] },
  { label: "channel history", path: pathId(1).map((id) => `/api/channels/${id}/messages`), token: fuzzer.token, keys: ["limit", "before", "after"] },
  { label: "public channels", path: fc.constant("/api/channels/public"), token: fuzzer.token, keys: ["limit", "after"] },
  { label: "channel members", path: pathId(privateChannel).map((id) => `/api/channels/${id}/members`), token: fuzzer.token, keys: ["limit", "after"] },
];

async function queriesRound(scale: number, seed: number): Promise<{ count: number; failures: Failure[] }> {
  const routes = queryRoutes();
  const arbitrary = fc.integer({ min: 0, max: routes.length - 1 }).chain((i) =>
    fc.record({ index: fc.constant(i), path: routes[i]!.path, query: queryString(routes[i]!.keys) }),
  );
  const requests = sample(arbitrary, Math.round(1000 * scale), seed).map(({ index, path, query }) => ({
    label: routes[index]!.label,
    method: "GET",
    path: `${path}?${query}`,
    headers: { authorization: `Bearer ${routes[index]!.token}` },
  }));
  return { count: requests.length, failures: await sendAll(requests) };
}

/** Access tokens signed with the service's own secret whose claims are wrong in every way (the signature alone must not let them in). */
async function forgedTokens(seed: number): Promise<string[]> {
  const claims = JSON.parse(Buffer.from(fuzzer.token.split(".")[1]!, "base64url").toString()) as Record<string, Json>;
  const trees = sample(mutatedTree(claims, { maxHuge: 2000, maxDepth: 50 }), 60, seed);
  const signed = await Promise.all(
    trees.map(async (tree) => {
      const payload = toValue(tree);
      if (typeof payload !== "object" || payload === null || Array.isArray(payload) || payload instanceof Uint8Array) return undefined;
      try {
        return await sign(payload as Record<string, unknown>, env.JWT_SECRET!, "HS256");
      } catch {
        return undefined; // hono refuses to sign it: nothing to send
      }
    }),
  );
  const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const [, payload, signature] = fuzzer.token.split(".");
  return [
    ...signed.filter((t): t is string => t !== undefined),
    // Headers the verifier must refuse: another algorithm, none, a key id, broken JSON.
    `${b64({ alg: "none", typ: "JWT" })}.${payload}.`,
    `${b64({ alg: "HS512", typ: "JWT" })}.${payload}.${signature}`,
    `${b64({ alg: "HS256", typ: "JWT", kid: "../../../dev/null" })}.${payload}.${signature}`,
    `${b64({ alg: "HS256", typ: "JWT", crit: ["exp"] })}.${payload}.${signature}`,
    `${Buffer.from("{not json").toString("base64url")}.${payload}.${signature}`,
    `${b64("a string")}.${payload}.${signature}`,
    `${b64(null)}.${payload}.${signature}`,
    `${fuzzer.token.split(".")[0]}.${Buffer.from("{not json").toString("base64url")}.${signature}`,
  ];
}

async function headersRound(scale: number, seed: number): Promise<{ count: number; failures: Failure[] }> {
  const token = fuzzer.token;
  const forged = await forgedTokens(seed + 1);
  const targets: { label: string; method: string; path: string; body?: string }[] = [
    { label: "me", method: "GET", path: "/api/users/me" },
    { label: "users", method: "GET", path: "/api/users?limit=2" },
    { label: "send", method: "POST", path: "/api/messages", body: '{"content":"header fuzz"}' },
    { label: "read marker", method: "POST", path: "/api/channels/1/read", body: '{"messageId":0}' },
    { label: "refresh", method: "POST", path: "/api/auth/refresh", body: '{"refreshToken":"not-a-token"}' },
    { label: "channels", method: "GET", path: "/api/channels" },
    { label: "presence", method: "GET", path: "/api/presence" },
    { label: "healthz", method: "GET", path: "/healthz" },
    { label: "metrics", method: "GET", path: "/metrics" },
  ];
  const flip = (s: string, at: number) => s.slice(0, at % s.length) + (s[at % s.length] === "A" ? "B" : "A") + s.slice((at % s.length) + 1);
  const authorization = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        "", "Bearer", "Bearer ", "Bearer  ", "bearer", `bearer ${token}`, `BEARER ${token}`, `Bearer  ${token}`, `Bearer\t${token}`,
        `Bearer ${token} `, ` Bearer ${token}`, `Bearer ${token}x`, `Bearer ${token}.x`, `Bearer ${token.toLowerCase()}`, `Bearer ${token} extra`,
        `Bearer ${token}, Bearer ${token}`, `Bearer ${token};`, token, `Token ${token}`, `Basic ${btoa("user:pass")}`, "Bearer a.b.c", "Bearer ..",
        "Bearer a..", "Bearer .a.", `Bearer ${"a".repeat(6000)}.b.c`, `Bearer ${token.split(".").slice(0, 2).join(".")}.`,
        `Bearer ${token.split(".").reverse().join(".")}`, "Bearer null", "Bearer undefined", "Bearer __proto__",
      ),
    },
    { weight: 2, arbitrary: fc.nat().map((at) => `Bearer ${flip(token, at)}`) },
    { weight: 2, arbitrary: fc.constantFrom(...forged).map((t) => `Bearer ${t}`) },
    { weight: 1, arbitrary: headerValue().map((v) => `Bearer ${v}`) },
    { weight: 1, arbitrary: headerValue() },
  );
  const contentType = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16", "application/json; charset=latin1",
        "APPLICATION/JSON", "application/json;", "application/json ; x", "application/json;;;", "application/vnd.api+json", "application/jsonx",
        "application/x-json", "text/json", "text/plain", "text/html", "multipart/form-data; boundary=x", "multipart/form-data",
        "application/x-www-form-urlencoded", "application/octet-stream", "", "*/*", "json", "application/json, text/plain", "application/json\t",
        "application/+json", "application/json; boundary=\"", 'application/json; charset="', "application/json; " + "x=y; ".repeat(500),
      ),
    },
    { weight: 1, arbitrary: headerValue() },
  );
  const forwardedFor = fc.oneof(
    fc.constantFrom(
      "1.2.3.4", "1.2.3.4, 5.6.7.8", "::1", "[::1]", "999.999.999.999", "", ",,,", " , ", "unknown", "1.2.3.4:80", "a".repeat(5000),
      "1.2.3.4,".repeat(700), "::ffff:127.0.0.1", "fe80::1%eth0", "__proto__", "constructor",
    ),
    headerValue(),
  );
  const arbitrary = fc.record(
    {
      target: fc.constantFrom(...targets),
      authorization,
      "content-type": contentType,
      "x-request-id": headerValue(),
      "x-forwarded-for": forwardedFor,
      origin: fc.constantFrom("https://evil.example", "null", "", "file://", "x".repeat(3000)),
      accept: fc.constantFrom("*/*", "text/html", "application/xml", "", "application/json;q=0"),
      cookie: fc.constantFrom("a=b", "__proto__=1", "x".repeat(4000), ""),
    },
    { requiredKeys: ["target"] },
  );
  const requests: FuzzRequest[] = [];
  // fetch refuses some values outright; past 16 KiB of headers Bun answers 431 before the app
  // sees the request (fuzz-protocol.test.ts covers both over a raw socket).
  let unsendable = 0;
  for (const { target: t, ...headers } of sample(arbitrary, Math.round(900 * scale), seed)) {
    const all: Record<string, string> = { ...(t.body ? { "content-type": "application/json" } : {}), ...(headers.authorization === undefined ? { authorization: `Bearer ${token}` } : {}) };
    for (const [key, value] of Object.entries(headers)) if (value !== undefined) all[key] = value;
    try {
      new Headers(all);
    } catch {
      unsendable++;
      continue;
    }
    if (Object.entries(all).reduce((n, [k, v]) => n + k.length + v.length + 4, 0) > 12 * 1024) {
      unsendable++;
      continue;
    }
    requests.push({ label: t.label, method: t.method, path: t.path, headers: all, body: t.body });
  }
  expect(unsendable).toBeLessThan(requests.length / 10);
  return { count: requests.length, failures: await sendAll(requests) };
}

async function rawBodiesRound(scale: number, seed: number): Promise<{ count: number; failures: Failure[] }> {
  const routes = bodyRoutes().filter((r) => r.label !== "register" && r.label !== "login");
  const arbitrary = fc.record({
    route: fc.constantFrom(...routes),
    body: rawBody(),
    contentType: fc.constantFrom("application/json", "application/json", "application/json; charset=utf-8", "application/octet-stream"),
  });
  const requests = sample(arbitrary, Math.round(400 * scale), seed).map(({ route, body, contentType }) => ({
    label: route.label,
    method: route.method,
    path: route.path(String(route.id ?? "")),
    headers: { ...json(route.token), "content-type": contentType },
    body,
  }));
  return { count: requests.length, failures: await sendAll(requests) };
}

async function pathsRound(scale: number, seed: number): Promise<{ count: number; failures: Failure[] }> {
  const segment = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.constantFrom(
        "api", "users", "messages", "channels", "auth", "me", "admin", "audit", "search", "direct", "read", "join", "members", "presence",
        "0", "999999999", "..", ".", "%2e%2e", "%2F", "%00", "%ZZ", "%C0%AF", "__proto__", "constructor", "prototype", "", "x".repeat(3000),
        "healthz", "openapi.json", "docs", "metrics", "ﬀ", "%F0%9F%92%A5", ";a=b", "*",
      ),
    },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme-ascii", maxLength: 12 }).map((s) => s.replace(/[#?]/g, "")) },
  );
  const arbitrary = fc.record({
    method: fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"),
    segments: fc.array(segment, { minLength: 1, maxLength: 6 }),
    trailingSlash: fc.boolean(),
  });
  const requests = sample(arbitrary, Math.round(400 * scale), seed)
    .map(({ method, segments, trailingSlash }) => ({ method, path: `/${segments.join("/")}${trailingSlash ? "/" : ""}` }))
    // /socket.io/ is the engine's (fuzz-protocol.test.ts); a logout must not end the fuzzer's session at random.
    .filter(({ path }) => !/^\/+socket\.io/i.test(path) && !path.includes("logout"))
    .map(({ method, path }) => ({
      label: "path",
      method,
      path,
      headers: json(fuzzer.token),
      body: method === "GET" || method === "HEAD" ? undefined : "{}",
    }));
  return { count: requests.length, failures: await sendAll(requests) };
}

// ---------------------------------------------------------------------------------------------
// Socket.IO payloads.

const socketOptions = { maxHuge: 12_000, maxDepth: 1_000, binary: true };
/** Event names the service has no handler for (socket.io-client refuses its reserved ones itself). */
const unknownEvents = ["error", "__proto__", "constructor", "toString", "hasOwnProperty", "message:error", "typing:error", "message:updated", "presence", "channel:read", "channel:joined", "channel:left", "connection", "join", "ping", "0", ""];

interface SocketCase {
  event: string;
  args: Json[];
  ack: boolean;
}

function socketCases(): fc.Arbitrary<SocketCase> {
  const payloadFor = (base: Record<string, Json>) =>
    fc.oneof(
      { weight: 6, arbitrary: mutatedTree(base, socketOptions).map((tree) => [tree]) },
      { weight: 2, arbitrary: hostileJson(socketOptions).map((value) => [value]) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }).map((b) => [new Bytes(b)]) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => [new Obj([...Object.entries(base).filter(([k]) => k !== "content" && k !== "channelId"), ["content", new Bytes(b)], ["channelId", new Bytes(b)]])]) },
      { weight: 1, arbitrary: fc.array(hostileJson(socketOptions), { maxLength: 4 }) },
    );
  return fc
    .oneof(
      { weight: 6, arbitrary: fc.constant("message") },
      { weight: 3, arbitrary: fc.constant("typing") },
      { weight: 1, arbitrary: fc.constantFrom(...unknownEvents) },
    )
    .chain((event) =>
      fc.record({
        event: fc.constant(event),
        args: payloadFor(event === "typing" ? { channelId: 1 } : { content: "socket fuzz" }),
        ack: fc.boolean(),
      }),
    )
    // Packets past SOCKET_MAX_BUFFER_BYTES close the connection by design (fuzz-protocol.test.ts).
    .filter(({ args }) => Buffer.byteLength(toText(args)) < 48 * 1024);
}

function connect(token: string, transport: "websocket" | "polling"): Promise<ChatClient> {
  const socket: ChatClient = ioClient(url, { auth: { token }, transports: [transport], reconnection: false, forceNew: true });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

type Broadcast = { id: number; channelId: number; userId: number; content: string };

/**
 * A sender emits the cases; a listener in the same channel (general) watches what is broadcast.
 * Acks are checked one by one; what was sent without an ack is accounted for by counting: each
 * such `message` yields at most one of a broadcast or a `message:error`.
 */
async function socketRound(scale: number, seed: number, transport: "websocket" | "polling"): Promise<{ count: number; problems: string[]; stats: Record<string, number> }> {
  const [senderUser, listenerUser] = [await register(name("sender")), await register(name("listener"))];
  const sender = await connect(senderUser.token, transport);
  const listener = await connect(listenerUser.token, "websocket");
  const problems: string[] = [];
  const disconnects: string[] = [];
  sender.on("disconnect", (reason) => disconnects.push(`sender: ${reason}`));
  listener.on("disconnect", (reason) => disconnects.push(`listener: ${reason}`));
  const heardBySender: Broadcast[] = [];
  const heardByListener: Broadcast[] = [];
  sender.on("message", (m) => heardBySender.push(m as Broadcast));
  listener.on("message", (m) => heardByListener.push(m as Broadcast));
  const typings: unknown[] = [];
  listener.on("typing", (t) => typings.push(t));
  const errors = { message: 0, typing: 0 };
  for (const event of ["message", "typing"] as const) {
    (sender as unknown as { on(e: string, f: (v: unknown) => void): void }).on(`${event}:error`, (error) => {
      errors[event]++;
      const problem = errorObjectProblem(error);
      if (problem) problems.push(`${event}:error ${preview(error)}: ${problem}`);
    });
  }

  const cases = sample(socketCases(), Math.round(1500 * scale), seed);
  const acked = new Set<number>();
  let unackedMessages = 0;
  const stats = { emits: 0, okAcks: 0, refusedAcks: 0, withoutAck: 0, unknownEvent: 0, messageErrors: 0, typingErrors: 0, broadcasts: 0, typingRelayed: 0 };
  const emitter = sender as unknown as {
    emit(event: string, ...args: unknown[]): void;
    timeout(ms: number): { emitWithAck(event: string, ...args: unknown[]): Promise<any> };
  };
  await inPool(cases, 16, async ({ event, args, ack }) => {
    const values = args.map(toValue);
    const handled = event === "message" || event === "typing";
    stats.emits++;
    if (!handled && ack) {
      // An unknown event that asks for an ack is answered NOT_FOUND (api.md §7), so the client's
      // callback does not wait for its timeout; its name is not echoed back.
      stats.unknownEvent++;
      let answer: any;
      try {
        answer = await emitter.timeout(10_000).emitWithAck(event, ...values);
      } catch {
        problems.push(`${event}: unknown event with an ack, not answered within 10 s`);
        return;
      }
      const problem = answer?.ok === false && answer.error?.code === "NOT_FOUND" ? errorObjectProblem(answer.error) : "not a NOT_FOUND refusal";
      if (Object.keys(answer ?? {}).sort().join() !== "error,ok" || problem) problems.push(`${event} → ${preview(answer)}: ${problem ?? "extra keys"}`);
      return;
    }
    if (!ack || !handled) {
      if (event === "message") unackedMessages++;
      if (handled) stats.withoutAck++;
      else stats.unknownEvent++;
      emitter.emit(event, ...values);
      return;
    }
    let result: any;
    try {
      result = await emitter.timeout(10_000).emitWithAck(event, ...values);
    } catch {
      problems.push(`${event} ${preview(values)}: no ack within 10 s`);
      return;
    }
    const shown = `${event} ${preview(values)} → ${preview(result)}`;
    if (result?.ok === true) stats.okAcks++;
    else stats.refusedAcks++;
    if (result?.ok === true) {
      if (event === "message") {
        if (typeof result.message?.id !== "number") problems.push(`${shown}: ok without a message`);
        else acked.add(result.message.id);
      } else if (Object.keys(result).join() !== "ok") problems.push(`${shown}: unexpected ok ack`);
    } else if (result?.ok === false && Object.keys(result).sort().join() === "error,ok") {
      const problem = errorObjectProblem(result.error);
      if (problem) problems.push(`${shown}: ${problem}`);
    } else {
      problems.push(`${shown}: not an ack of api.md §3`);
    }
  });

  // Broadcasts go out in id order: once both have the marker, both have every earlier message
  // (and only those are compared; every acked one is earlier, its ack came before the marker was sent).
  const marker = await emitter.timeout(10_000).emitWithAck("message", { content: `marker ${crypto.randomUUID()}` });
  const deadline = performance.now() + 10_000;
  while (![heardBySender, heardByListener].every((list) => list.some((m) => m.id === marker.message.id)) && performance.now() < deadline) await Bun.sleep(10);
  const ids = (list: Broadcast[]) => new Set(list.filter((m) => m.id < marker.message.id).map((m) => m.id));
  const [bySender, byListener] = [ids(heardBySender), ids(heardByListener)];
  if (bySender.size !== byListener.size || [...bySender].some((id) => !byListener.has(id))) problems.push("sender and listener heard different broadcasts");
  for (const id of acked) if (!byListener.has(id)) problems.push(`acked message ${id} was not broadcast`);
  for (const m of heardByListener) if (m.userId !== senderUser.user.id || m.channelId !== 1) problems.push(`broadcast of someone else's or another channel's message: ${preview(m)}`);
  const unacked = [...byListener].filter((id) => !acked.has(id)).length;
  // Each message sent without an ack is either broadcast or refused with message:error, never both
  // (a repeated clientId is neither: the first message is not broadcast again).
  if (unacked + errors.message > unackedMessages) problems.push(`${unacked} unacked broadcasts + ${errors.message} message:error > ${unackedMessages} messages sent without an ack`);
  for (const t of typings) if (JSON.stringify(t) !== JSON.stringify({ channelId: 1, userId: senderUser.user.id })) problems.push(`typing relayed as ${preview(t)}`);
  if (!sender.connected || !listener.connected || disconnects.length > 0) problems.push(`connection lost: ${disconnects.join(", ") || "not connected"}`);
  sender.disconnect();
  listener.disconnect();
  Object.assign(stats, { messageErrors: errors.message, typingErrors: errors.typing, broadcasts: byListener.size, typingRelayed: typings.length });
  return { count: cases.length, problems, stats };
}

function expectNoProblems(what: string, count: number, problems: string[], seed: number): void {
  if (problems.length === 0) return;
  throw new Error(`${what}: ${problems.length} problems in ${count} emits (seed ${seed}; FUZZ_SEED=${fuzzSeed} replays the run):\n${problems.slice(0, 10).join("\n")}`);
}

// ---------------------------------------------------------------------------------------------

const rounds = {
  bodies: bodiesRound,
  bodyless: bodylessRound,
  queries: queriesRound,
  headers: headersRound,
  rawBodies: rawBodiesRound,
  paths: pathsRound,
};
const seedOf = (round: keyof typeof rounds | "sockets", warmUp = false) => fuzzSeed + Object.keys(rounds).indexOf(round) * 1000 + (round === "sockets" ? 7000 : 0) + (warmUp ? 500 : 0);

const memory: Record<string, number> = { start: residentBytes(service.proc.pid) };
const started = performance.now();

test("warm-up: a quarter of every round, after which the service's memory is the baseline", async () => {
  for (const [round, run] of Object.entries(rounds)) {
    const { count, failures } = await run(warmUpScale, seedOf(round as keyof typeof rounds, true));
    expectNoFailures(`warm-up ${round}`, count, failures, seedOf(round as keyof typeof rounds, true));
  }
  for (const transport of ["websocket", "polling"] as const) {
    const { count, problems } = await socketRound(warmUpScale, seedOf("sockets", true), transport);
    expectNoProblems(`warm-up sockets over ${transport}`, count, problems, seedOf("sockets", true));
  }
  memory.afterWarmUp = await settledResidentBytes(service.proc.pid);
}, 60_000);

describe("REST: every answer is a 2xx or a 4xx in the error shape, never a 5xx", () => {
  test("hand-picked values in every field of every body, and as the whole body (trap objects, NUL, lone surrogates, deep nesting, prototype keys)", async () => {
    const requests: FuzzRequest[] = [];
    for (const route of bodyRoutes()) {
      const entries = Object.entries(route.base);
      const bodies: [string, Json][] = [];
      for (const [key] of entries) {
        for (const [label, value] of handPickedValues) bodies.push([`${key}: ${label}`, new Obj(entries.map(([k, v]) => [k, k === key ? value : v]))]);
      }
      for (const [label, value] of handPickedValues) bodies.push([`whole body: ${label}`, value]);
      bodies.push(["the valid body under __proto__", new Obj([["__proto__", new Obj(entries)]])]);
      for (const [label, body] of bodies) {
        requests.push({ label: `${route.label}, ${label}`, method: route.method, path: route.path(String(route.id ?? "")), headers: json(route.token), body: toText(body) });
      }
    }
    expectNoFailures("hand-picked bodies", requests.length, await sendAll(requests), 0);
  });

  test("hand-picked Content-Type values on every route that takes a body, with its valid body and with an empty one", async () => {
    const contentTypes = [
      "application/json;", "application/json ; x", "application/json;;;", "application/json; charset", "application/json; charset=utf-16",
      "APPLICATION/JSON", "application/vnd.api+json", "application/jsonx", "application/x-json", "text/json", "text/plain",
      "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "application/octet-stream", "", "*/*",
    ];
    const requests: FuzzRequest[] = [];
    // Not register, login and password change: their valid bodies cost an argon2id hash each, and nothing here depends on the route.
    for (const route of bodyRoutes().filter((r) => !["register", "login", "change password"].includes(r.label))) {
      for (const contentType of contentTypes) {
        for (const body of [toText(new Obj(Object.entries(route.base))), ""]) {
          requests.push({
            label: `${route.label}, Content-Type ${JSON.stringify(contentType)}, ${body ? "valid body" : "empty body"}`,
            method: route.method,
            path: route.path(String(route.id ?? "")),
            headers: { ...json(route.token), "content-type": contentType },
            body,
          });
        }
      }
    }
    expectNoFailures("hand-picked content types", requests.length, await sendAll(requests, 1), 0);
  });

  test("mutated bodies for every route that takes one (wrong types, huge strings, deep nesting, prototype keys, broken JSON)", async () => {
    const { count, failures } = await bodiesRound(1, seedOf("bodies"));
    expectNoFailures("bodies", count, failures, seedOf("bodies"));
  }, 60_000);

  test("random bodies sent to routes that take none", async () => {
    const { count, failures } = await bodylessRound(1, seedOf("bodyless"));
    expectNoFailures("bodyless", count, failures, seedOf("bodyless"));
  });

  test("query strings for every GET route with query parameters (repeated keys, junk percent-encoding, invalid UTF-8)", async () => {
    const { count, failures } = await queriesRound(1, seedOf("queries"));
    expectNoFailures("queries", count, failures, seedOf("queries"));
  });

  test("header values: Authorization (tampered and forged tokens), Content-Type, X-Request-Id, X-Forwarded-For, Origin, Cookie", async () => {
    const { count, failures } = await headersRound(1, seedOf("headers"));
    expectNoFailures("headers", count, failures, seedOf("headers"));
  });

  test("raw byte bodies: binary, invalid UTF-8 (alone and inside strings and keys), UTF-16, BOMs, NULs", async () => {
    const { count, failures } = await rawBodiesRound(1, seedOf("rawBodies"));
    expectNoFailures("raw bodies", count, failures, seedOf("rawBodies"));
  });

  test("random paths and methods", async () => {
    const { count, failures } = await pathsRound(1, seedOf("paths"));
    expectNoFailures("paths", count, failures, seedOf("paths"));
  });
});

describe("the same membership change many times at once (a client retrying hard, two tabs)", () => {
  // Each copy must get a 2xx or a 4xx. channels.service.ts checks, then writes, so the writes
  // must tolerate a racing copy: a join is an INSERT ... ON CONFLICT DO NOTHING and a leave
  // deletes whatever is there (an upsert, SELECT + INSERT in Prisma, and a delete of one row
  // gave the losers 500s). The rounds above send these routes one at a time all the same.
  test("16 joins, 16 invitations and 16 leaves of one channel for one user, each batch at once: never a 5xx", async () => {
    const user = await register(name("racer"));
    const open = (await post("/api/channels", fuzzer.token, { name: "race public", kind: "public" }, 201)).id as number;
    const closed = (await post("/api/channels", fuzzer.token, { name: "race private", kind: "private" }, 201)).id as number;
    // Their request ids keep the INTERNALs they log out of the final check for logged errors.
    const batch = (label: string, path: string, token: string, body?: string): FuzzRequest[] =>
      Array.from({ length: 16 }, (_, i) => ({ label, method: "POST", path, headers: { ...json(token), "x-request-id": `membership-race-${label}-${i}` }, body }));
    const failures = [
      ...(await sendAll(batch("join", `/api/channels/${open}/join`, user.token), 16)),
      ...(await sendAll(batch("invite", `/api/channels/${closed}/members`, fuzzer.token, JSON.stringify({ userId: user.user.id })), 16)),
      ...(await sendAll(batch("leave", `/api/channels/${open}/leave`, user.token), 16)),
    ];
    expectNoFailures("concurrent membership changes", 48, failures, 0);
  });
});

describe("Socket.IO: random payloads on every client event, with and without acks", () => {
  test("hand-picked values in every field of message and typing, and as the whole payload: a 4xx ack each, the connection stays", async () => {
    const user = await register(name("picker"));
    const socket = await connect(user.token, "websocket");
    const lost: string[] = [];
    socket.on("disconnect", (reason) => lost.push(reason));
    const emitter = socket as unknown as { timeout(ms: number): { emitWithAck(event: string, ...args: unknown[]): Promise<any> } };
    const problems: string[] = [];
    const cases: [event: string, label: string, payload: Json][] = [];
    for (const [label, value] of handPickedValues) {
      for (const key of ["content", "channelId", "clientId", "userId"]) cases.push(["message", `${key}: ${label}`, new Obj([["content", "hand-picked"], [key, value]])]);
      cases.push(["message", `whole payload: ${label}`, value]);
      cases.push(["typing", `channelId: ${label}`, new Obj([["channelId", value]])]);
      cases.push(["typing", `whole payload: ${label}`, value]);
    }
    await inPool(cases, 8, async ([event, label, payload]) => {
      let ack: any;
      try {
        ack = await emitter.timeout(10_000).emitWithAck(event, toValue(payload));
      } catch {
        return void problems.push(`${event} ${label}: no ack`);
      }
      // None of these is valid where it is put (a userId of -0 is not the caller's): each is refused.
      const problem = ack?.ok === false ? errorObjectProblem(ack.error) : "not a refusal";
      if (problem) problems.push(`${event} ${label} → ${preview(ack)}: ${problem}`);
    });
    expect({ connected: socket.connected, lost }).toEqual({ connected: true, lost: [] });
    socket.disconnect();
    expectNoProblems("hand-picked socket payloads", cases.length, problems, 0);
  });

  test.each(["websocket", "polling"] as const)(
    "over %s: each ack is ok or a 4xx error, nothing refused is broadcast, the connection stays",
    async (transport) => {
      const scale = transport === "websocket" ? 1 : 0.4;
      const { count, problems, stats } = await socketRound(scale, seedOf("sockets") + (transport === "polling" ? 1 : 0), transport);
      console.log(`fuzz sockets over ${transport}: ${JSON.stringify(stats)}`);
      expectNoProblems(`sockets over ${transport}`, count, problems, seedOf("sockets"));
    },
    60_000,
  );
});

test("afterwards the service is up, answers /healthz, logged no error, and its memory is steady", async () => {
  memory.end = await settledResidentBytes(service.proc.pid);
  const growth = memory.end! - memory.afterWarmUp!;
  console.log(
    `fuzz memory (VmRSS of the service): start ${mib(memory.start!)} MiB, after warm-up ${mib(memory.afterWarmUp!)} MiB, ` +
      `after the main rounds ${mib(memory.end)} MiB, growth ${mib(growth)} MiB; ${Math.round((performance.now() - started) / 1000)} s of fuzzing`,
  );
  expect(service.proc.exitCode).toBeNull();
  const health = await fetch(`${url}/healthz`);
  expect(health.status).toBe(200);
  expect(await health.json()).toEqual({ status: "ok" });
  // An INTERNAL is logged at error level (50) with its cause; an unhandled rejection too.
  const errors = service.logs.filter((line) => typeof line.level === "number" && line.level >= 50 && !String(line.requestId).startsWith("membership-race-"));
  expect(errors.map((line) => preview(line, 600))).toEqual([]);
  expect(growth).toBeLessThan(64 * 2 ** 20);
  // And it still stops cleanly.
  const { code } = await service.stop();
  expect(code).toBe(0);
  expect(await service.stderr).not.toMatch(/error|exception|panic/i);
});
