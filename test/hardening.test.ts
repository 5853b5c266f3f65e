import { createHmac } from "node:crypto";
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { decode, sign } from "hono/jwt";
import { io as ioClient } from "socket.io-client";
import { expectError, saneRequestId } from "./helpers/expect-error.ts";
import { nextEvent, sendWithAck, startTestServer, testJwtSecret, transports, uniqueName, type ChatClient, type Registered, type TestServer, type Transport } from "./helpers/server.ts";
import { b64url, now } from "./helpers/tokens.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §7 hardening: secure headers on every REST response, CORS from CORS_ORIGINS for REST
// and Socket.IO alike, JWT pinned to HS256, X-Request-Id sanitised, SOCKET_MAX_BUFFER_BYTES
// honoured, and a login for an unknown user that costs as much as a wrong password.
// (The default 64 KiB socket limit, the body limit and most request-id cases are in http.test.ts.)

const allowed = "https://chat.example";
const password = "correct horse battery";
const json = { "content-type": "application/json" };

const [main, plain] = await Promise.all([
  // One message per user per minute, so a second POST /api/messages is a 429 to inspect.
  startTestServer({ env: { CORS_ORIGINS: allowed, RATE_LIMIT_MESSAGES_BURST: "1/1m" } }),
  // No CORS_ORIGINS; a small socket buffer.
  startTestServer({ env: { SOCKET_MAX_BUFFER_BYTES: "4096" } }),
]);
const caller = await main.register(uniqueName("caller"), password);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

// ---------------------------------------------------------------------------------------------

/** The headers hono's secureHeaders() sets by default; each must be on every REST response. */
const secureHeaderChecks: [header: string, check: (value: string) => void][] = [
  ["X-Content-Type-Options", (v) => expect(v).toBe("nosniff")],
  ["X-Frame-Options", (v) => expect(v).toMatch(/^(DENY|SAMEORIGIN)$/i)],
  ["Referrer-Policy", (v) => expect(v).toMatch(/^(no-referrer|same-origin|strict-origin|strict-origin-when-cross-origin)$/)],
  [
    "Strict-Transport-Security",
    (v) => {
      expect(v).toMatch(/^max-age=\d+; includeSubDomains/);
      // At least 180 days.
      expect(Number(/max-age=(\d+)/.exec(v)?.[1])).toBeGreaterThanOrEqual(180 * 24 * 3600);
    },
  ],
  ["Cross-Origin-Opener-Policy", (v) => expect(v).toBe("same-origin")],
  ["Cross-Origin-Resource-Policy", (v) => expect(v).toMatch(/^same-(origin|site)$/)],
  ["Origin-Agent-Cluster", (v) => expect(v).toBe("?1")],
  ["X-DNS-Prefetch-Control", (v) => expect(v).toBe("off")],
  ["X-Download-Options", (v) => expect(v).toBe("noopen")],
  ["X-Permitted-Cross-Domain-Policies", (v) => expect(v).toBe("none")],
  // The legacy XSS auditor is switched off (it caused more harm than it prevented).
  ["X-XSS-Protection", (v) => expect(v).toBe("0")],
];

function expectSecureHeaders(res: Response) {
  const missing = secureHeaderChecks.map(([name]) => name).filter((name) => !res.headers.has(name));
  expect({ status: res.status, missing }).toEqual({ status: res.status, missing: [] });
  for (const [name, check] of secureHeaderChecks) check(res.headers.get(name)!);
  expect(res.headers.get("x-powered-by")).toBeNull();
}

describe("secure headers on every REST response, success and error", () => {
  const post = (path: string, body: string, headers: Record<string, string> = {}) => fetch(`${main.url}${path}`, { method: "POST", headers: { ...json, ...headers }, body });
  const rows: [label: string, status: number, request: () => Promise<Response>][] = [
    ["GET /healthz", 200, () => fetch(`${main.url}/healthz`)],
    ["HEAD /healthz", 200, () => fetch(`${main.url}/healthz`, { method: "HEAD" })],
    ["GET /readyz", 200, () => fetch(`${main.url}/readyz`)],
    ["GET /api/users/me with a token", 200, () => fetch(`${main.url}/api/users/me`, { headers: bearer(caller.token) })],
    ["POST /api/auth/register", 201, () => post("/api/auth/register", JSON.stringify({ username: uniqueName("hdr"), password }))],
    ["POST /api/auth/login, wrong password (401)", 401, () => post("/api/auth/login", JSON.stringify({ username: caller.user.username, password: "wrong password!" }))],
    ["GET /api/users without a token (401)", 401, () => fetch(`${main.url}/api/users`)],
    ["unknown route (404)", 404, () => fetch(`${main.url}/nope`)],
    ["malformed JSON (400)", 400, () => post("/api/auth/login", "{")],
    ["validation failure (400)", 400, () => post("/api/auth/login", "{}")],
    ["body over the limit (413)", 413, () => post("/api/auth/login", JSON.stringify({ username: "x".repeat(100 * 1024), password }))],
    [
      "rate limited (429)",
      429,
      async () => {
        const { token } = await main.register(uniqueName("hdr429"), password);
        const send = () => post("/api/messages", JSON.stringify({ content: "hi" }), bearer(token));
        expect((await send()).status).toBe(201);
        return send();
      },
    ],
    [
      "CORS preflight (204)",
      204,
      () => fetch(`${main.url}/api/auth/login`, { method: "OPTIONS", headers: { origin: allowed, "access-control-request-method": "POST" } }),
    ],
  ];

  test.each(rows)("%s", async (_label, status, request) => {
    const res = await request();
    expect(res.status).toBe(status);
    expectSecureHeaders(res);
    await res.body?.cancel();
  });

  test("a 503 while draining carries them too, and CORS, so a browser client can read it", async () => {
    main.app.lifecycle.draining = true;
    let res: Response;
    try {
      res = await fetch(`${main.url}/api/users/me`, { headers: { ...bearer(caller.token), origin: allowed } });
    } finally {
      main.app.lifecycle.draining = false;
    }
    await expectError(res, 503, "UNAVAILABLE");
    expect(res.headers.get("retry-after")).toBe("1");
    expectSecureHeaders(res);
    expect(res.headers.get("access-control-allow-origin")).toBe(allowed);
    // And it was only while draining.
    expect((await fetch(`${main.url}/api/users/me`, { headers: bearer(caller.token) })).status).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------

describe("CORS from CORS_ORIGINS, for REST and Socket.IO alike", () => {
  const preflight = (server: TestServer, origin: string) =>
    fetch(`${server.url}/api/messages`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
  const handshake = (server: TestServer, origin: string) => fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin } });

  /** An Engine.IO open packet: the handshake itself was served (CORS is for the browser to enforce). */
  async function expectOpenPacket(res: Response) {
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toStartWith("0{");
    expect(JSON.parse(text.slice(1))).toMatchObject({ sid: expect.any(String), upgrades: expect.any(Array) });
  }

  /** No grant: the header is absent (Hono), or a value no browser matches (the engine writes "false"). */
  function expectNotGranted(res: Response, origin: string) {
    const value = res.headers.get("access-control-allow-origin");
    expect([null, "false"]).toContain(value);
    expect(value).not.toBe(origin);
    expect(value).not.toBe("*");
  }

  test(`REST preflight from ${allowed}: allowed, with the method and the requested headers`, async () => {
    const res = await preflight(main, allowed);
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(allowed);
    expect(res.headers.get("access-control-allow-methods") ?? "").toContain("POST");
    expect((res.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(",")).toEqual(expect.arrayContaining(["authorization", "content-type"]));
    expect(res.headers.get("vary") ?? "").toMatch(/\bOrigin\b/);
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
  });

  const otherOrigins = [
    "https://evil.example",
    "http://chat.example",
    "https://chat.example:8443",
    "https://chat.example.evil.example",
    "https://evil-chat.example",
    "https://CHAT.EXAMPLE.evil",
    "null",
  ];

  test.each(otherOrigins)("REST preflight from %s: no Access-Control-Allow-Origin", async (origin) => {
    const res = await preflight(main, origin);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });

  test.each(otherOrigins)("Socket.IO polling handshake from %s: served, but not granted to that origin", async (origin) => {
    const res = await handshake(main, origin);
    expectNotGranted(res, origin);
    await expectOpenPacket(res);
  });

  test(`Socket.IO polling handshake from ${allowed}: Access-Control-Allow-Origin: ${allowed}`, async () => {
    const res = await handshake(main, allowed);
    expect(res.headers.get("access-control-allow-origin")).toBe(allowed);
    expect(res.headers.get("vary") ?? "").toMatch(/\bOrigin\b/);
    await expectOpenPacket(res);
  });

  test(`Socket.IO preflight from ${allowed} is allowed; from another origin it is not`, async () => {
    const pre = (origin: string) =>
      fetch(`${main.url}/socket.io/?EIO=4&transport=polling`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST" } });
    const ok = await pre(allowed);
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe(allowed);
    expectNotGranted(await pre("https://evil.example"), "https://evil.example");
  });

  test("actual REST responses from the allowed origin carry the grant, errors and 429 included, with Retry-After and X-Request-Id exposed", async () => {
    const { token } = await main.register(uniqueName("cors"), password);
    const send = () => fetch(`${main.url}/api/messages`, { method: "POST", headers: { ...json, ...bearer(token), origin: allowed }, body: JSON.stringify({ content: "hi" }) });
    const responses = [
      await fetch(`${main.url}/healthz`, { headers: { origin: allowed } }),
      await fetch(`${main.url}/api/users`, { headers: { origin: allowed } }), // 401
      await fetch(`${main.url}/nope`, { headers: { origin: allowed } }), // 404
      await send(), // 201
      await send(), // 429
    ];
    expect(responses.map((r) => r.status)).toEqual([200, 401, 404, 201, 429]);
    for (const res of responses) {
      expect(res.headers.get("access-control-allow-origin")).toBe(allowed);
      const exposed = (res.headers.get("access-control-expose-headers") ?? "").toLowerCase().split(",").map((s) => s.trim());
      expect(exposed).toEqual(expect.arrayContaining(["retry-after", "x-request-id", "link"]));
      await res.body?.cancel();
    }
    expect(responses[4]!.headers.get("retry-after")).toMatch(/^[1-9]\d*$/);
  });

  test("actual REST responses to another origin carry no grant", async () => {
    for (const path of ["/healthz", "/api/users", "/nope"]) {
      const res = await fetch(`${main.url}${path}`, { headers: { origin: "https://evil.example" } });
      expect(res.headers.get("access-control-allow-origin")).toBeNull();
      await res.body?.cancel();
    }
  });

  test("with CORS_ORIGINS empty: no Access-Control-Allow-Origin anywhere, REST or Socket.IO, for any origin", async () => {
    for (const origin of [allowed, "https://evil.example"]) {
      const responses = [
        await preflight(plain, origin),
        await fetch(`${plain.url}/healthz`, { headers: { origin } }),
        await fetch(`${plain.url}/api/users`, { headers: { origin } }),
        await fetch(`${plain.url}/socket.io/?EIO=4&transport=polling`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST" } }),
      ];
      for (const res of responses) {
        expect(res.headers.get("access-control-allow-origin")).toBeNull();
        await res.body?.cancel();
      }
      const sio = await handshake(plain, origin);
      expect(sio.headers.get("access-control-allow-origin")).toBeNull();
      await expectOpenPacket(sio);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("JWT algorithm pinned to HS256", () => {
  const claims = (user: Registered) => ({ ...(decode(user.token).payload as Record<string, unknown>), iat: now(), exp: now() + 600 });
  /** A token with `alg` in its header, signed by HMAC with the right secret. */
  const hmacToken = (alg: string, hash: "sha256" | "sha384" | "sha512", payload: Record<string, unknown>) => {
    const signingInput = `${b64url({ alg, typ: "JWT" })}.${b64url(payload)}`;
    return `${signingInput}.${createHmac(hash, testJwtSecret).update(signingInput).digest("base64url")}`;
  };

  const refused: [label: string, make: (user: Registered) => Promise<string>][] = [
    ["HS512 signed with the right secret", async (u) => sign(claims(u), testJwtSecret, "HS512")],
    ["HS384 signed with the right secret", async (u) => sign(claims(u), testJwtSecret, "HS384")],
    // Algorithm confusion: an RS256 header whose "signature" is an HMAC keyed with the secret.
    ["RS256 header, HMAC-SHA256 signature with the secret", async (u) => hmacToken("RS256", "sha256", claims(u))],
    ["HS256 header, HMAC-SHA512 signature with the secret", async (u) => hmacToken("HS256", "sha512", claims(u))],
  ];

  function handshake(token: string, transport: Transport) {
    const socket: ChatClient = ioClient(main.url, { auth: { token }, transports: [transport], reconnection: false, forceNew: true });
    return new Promise<string>((resolve) => {
      socket.once("connect", () => {
        socket.disconnect();
        resolve("connected");
      });
      socket.once("connect_error", (error) => {
        socket.disconnect();
        resolve(error.message);
      });
    });
  }

  test("control: the same claims signed HS256 by hand are accepted by REST and both socket transports", async () => {
    const user = await main.register(uniqueName("jwt"), password);
    const token = await sign(claims(user), testJwtSecret, "HS256");
    expect((await fetch(`${main.url}/api/users/me`, { headers: bearer(token) })).status).toBe(200);
    for (const transport of transports) expect(await handshake(token, transport)).toBe("connected");
    // The hand-made tokens below come from this builder: with HS256 and SHA-256 it makes a good one.
    const handMade = hmacToken("HS256", "sha256", claims(user));
    expect((await fetch(`${main.url}/api/users/me`, { headers: bearer(handMade) })).status).toBe(200);
  });

  test.each(refused)("%s → 401 on REST (read and write), \"Unauthorized\" on both socket transports", async (_label, make) => {
    const user = await main.register(uniqueName("jwt"), password);
    const token = await make(user);
    await expectError(await fetch(`${main.url}/api/users/me`, { headers: bearer(token) }), 401, "UNAUTHORIZED");
    const write = await fetch(`${main.url}/api/messages`, { method: "POST", headers: { ...json, ...bearer(token) }, body: JSON.stringify({ content: "forged" }) });
    await expectError(write, 401, "UNAUTHORIZED");
    const [row] = await main.database.sql`SELECT count(*)::int AS n FROM messages WHERE user_id = ${user.user.id}`;
    expect((row as { n: number }).n).toBe(0);
    for (const transport of transports) expect(await handshake(token, transport)).toBe("Unauthorized");
  });
});

// ---------------------------------------------------------------------------------------------

describe("X-Request-Id sanitised before it is echoed (beyond http.test.ts)", () => {
  const unsafe: [label: string, id: string][] = [
    ["256 characters (one over the limit)", "x".repeat(256)],
    ["a double quote", 'qqq"def'],
    ["a percent-encoded CR LF and header", "qqq%0d%0aSet-Cookie:%20session=evil"],
    ["a percent-encoded quote", "qqq%22def"],
    ["a slash and dots", "../../qqq/passwd"],
    ["a comma-joined list", "qqq-1, qqq-2"],
    ["a colon", "qqq:def"],
  ];

  test.each(unsafe)("replaced, on success and on error: %s", async (_label, id) => {
    for (const res of [
      await fetch(`${main.url}/healthz`, { headers: { "x-request-id": id } }),
      await fetch(`${main.url}/nope`, { headers: { "x-request-id": id } }),
      await fetch(`${main.url}/api/users`, { headers: { "x-request-id": id } }),
    ]) {
      const echoed = res.headers.get("x-request-id") ?? "";
      expect(echoed).toMatch(saneRequestId);
      expect(echoed).not.toBe(id);
      // Replaced, not trimmed or truncated into something that still carries the input.
      expect(echoed).not.toContain("xxxxxxxx");
      // "q" is not a hex digit, so a random replacement can never contain "qqq" by chance
      // (an earlier "abc" marker failed once in CI when the fresh UUID happened to hold it).
      expect(echoed).not.toContain("qqq");
      expect(res.headers.get("set-cookie")).toBeNull();
      await res.body?.cancel();
    }
  });

  test("the replacement is fresh per request (not a fixed fallback)", async () => {
    const ids = new Set<string>();
    for (let i = 0; i < 3; i++) ids.add((await fetch(`${main.url}/healthz`, { headers: { "x-request-id": 'a"b' } })).headers.get("x-request-id") ?? "");
    expect(ids.size).toBe(3);
  });
});

// ---------------------------------------------------------------------------------------------

describe("SOCKET_MAX_BUFFER_BYTES=4096 is honoured (the default, 64 KiB, is in http.test.ts)", () => {
  test.each(transports)("over %s: a 5000-character payload closes the socket at 4096, while the default server reads and refuses it", async (transport) => {
    const oversized = { content: "x".repeat(5000) };

    // Default limit: the payload is read, refused by validation, and the connection stays.
    const roomyUser = await main.register(uniqueName("roomy"), password);
    const roomy = await main.connect(roomyUser.token, transport);
    try {
      expect(await sendWithAck(roomy, oversized)).toMatchObject({ ok: false, error: { code: "VALIDATION_FAILED" } });
      expect(roomy.connected).toBe(true);
    } finally {
      roomy.disconnect();
    }

    // 4096 bytes: a message under it is delivered; the same oversized payload closes the connection.
    const [user, other] = [await plain.register(), await plain.register()];
    const socket = await plain.connect(user.token, transport);
    const bystander = await plain.connect(other.token, transport);
    try {
      const small = await sendWithAck(socket, { content: "y".repeat(3000) });
      expect(small).toMatchObject({ ok: true, message: { content: "y".repeat(3000) } });

      const closed = nextEvent<string>(socket, "disconnect", 10_000);
      socket.emit("message", oversized);
      expect(await closed).toMatch(/transport (close|error)/);
      const [row] = await plain.database.sql`SELECT count(*)::int AS n FROM messages WHERE user_id = ${user.user.id}`;
      expect((row as { n: number }).n).toBe(1);

      // Only that connection: the bystander still sends.
      expect(bystander.connected).toBe(true);
      expect(await sendWithAck(bystander, { content: "still here" })).toMatchObject({ ok: true });
    } finally {
      socket.disconnect();
      bystander.disconnect();
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("login timing does not reveal whether a username exists", () => {
  test("unknown user vs wrong password for a known one: medians of 7 within a factor of 2 (the dummy argon2id verification runs)", async () => {
    const known = await main.register(uniqueName("timed"), password);
    const attempt = async (username: string) => {
      const started = performance.now();
      const res = await fetch(`${main.url}/api/auth/login`, { method: "POST", headers: json, body: JSON.stringify({ username, password: "not the password" }) });
      const body = (await res.json()) as { error: unknown };
      const ms = performance.now() - started;
      expect(res.status).toBe(401);
      return { ms, error: body.error };
    };
    // Warm-up of both paths (connections, JIT), not measured.
    await attempt(uniqueName("ghost"));
    await attempt(known.user.username);

    const unknownMs: number[] = [];
    const knownMs: number[] = [];
    for (let i = 0; i < 7; i++) {
      // Interleaved, so a slow moment on the machine hits both series alike.
      const u = await attempt(uniqueName("ghost"));
      const k = await attempt(known.user.username);
      expect(u.error).toEqual(k.error);
      unknownMs.push(u.ms);
      knownMs.push(k.ms);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const ratio = median(unknownMs) / median(knownMs);
    const summary = { ratio, unknownMs: unknownMs.map(Math.round), knownMs: knownMs.map(Math.round) };
    if (!(ratio >= 0.5 && ratio <= 2)) throw new Error(`login timing differs: ${JSON.stringify(summary)}`);
  });
});

describe("names of Object.prototype in URL paths are misses, never a plain-object lookup", () => {
  // A route that looks a path segment up in an object literal finds `constructor` on its
  // prototype (finding 10: `/docs/__proto__` answered 500 with a stack trace logged).
  const names = ["__proto__", "constructor", "toString", "valueOf", "hasOwnProperty", "isPrototypeOf", "prototype", "__defineGetter__"];

  /** Every path the app routes, each `:param` (or, for a fixed path, one more segment) replaced by `name`. */
  function pathsWith(name: string): { method: string; path: string; static: boolean }[] {
    const routes = main.app.app.routes.filter((r) => r.method !== "ALL" && !r.path.includes("*"));
    const seen = new Set<string>();
    const out: { method: string; path: string; static: boolean }[] = [];
    for (const { method, path } of routes) {
      const filled = path.includes(":") ? path.replace(/:\w+/g, name) : `${path.replace(/\/$/, "")}/${name}`;
      const key = `${method} ${filled}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ method, path: filled, static: !path.startsWith("/api/") });
    }
    // The chat page's files (middleware, not routes) and the root itself.
    for (const base of ["", "/app.js", "/styles.css"]) out.push({ method: "GET", path: `${base}/${name}`, static: true });
    return out;
  }

  test.each(names)("%s: every route answers a 4xx in the error shape; the static ones 404", async (name) => {
    const requests = pathsWith(name);
    expect(requests.length).toBeGreaterThan(30);
    for (const { method, path, static: isStatic } of requests) {
      const res = await fetch(`${main.url}${path}`, {
        method,
        headers: { ...bearer(caller.token), ...(method === "GET" || method === "DELETE" ? {} : json) },
        body: method === "GET" || method === "DELETE" ? undefined : "{}",
      });
      const what = `${method} ${path} → ${res.status}`;
      expect({ what, server: res.status >= 500 }).toEqual({ what, server: false });
      if (isStatic && method === "GET") expect({ what, status: res.status }).toEqual({ what, status: 404 });
      if (res.status >= 400) await expectError(res, res.status, ((await res.clone().json()) as { error: { code: string } }).error.code);
      else await res.body?.cancel();
    }
  });
});
