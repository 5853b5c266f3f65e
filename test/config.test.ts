import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { ConfigError, loadConfig, unknownSettings, type Config } from "../src/config.ts";
import { createTestDatabase } from "./helpers/db.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { productionEnv, startServerProcess } from "./helpers/process.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// api.md §6: every setting is validated once at start-up; a bad or missing variable is
// named, one line per problem. These are unit tests of `loadConfig`; test/lifecycle.test.ts
// checks that the entry point turns a ConfigError into a clean non-zero exit.

const secret = "x".repeat(32);
const dbUrl = "postgresql://postgres@127.0.0.1:5432/chat";
/** A complete, valid production environment; cases override single variables. */
const prod = { NODE_ENV: "production", JWT_SECRET: secret, DATABASE_URL: dbUrl };
const dev = { NODE_ENV: "development" };

const minutes = 60;
const hours = 60 * minutes;
const days = 24 * hours;

/** The ConfigError `loadConfig(env)` throws; fails the test if it returns instead. */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

/** Names of the variables a ConfigError's problem lines start with. */
const namedVars = (error: ConfigError) => error.problems.map((p) => p.split(":")[0]);

describe("defaults", () => {
  test("a minimal production environment gets the documented defaults", () => {
    const config = loadConfig(prod);
    expect(config).toMatchObject({
      NODE_ENV: "production",
      PORT: 3000,
      JWT_ACCESS_TTL: 15 * minutes,
      REFRESH_TOKEN_TTL: 30 * days,
      BODY_LIMIT_BYTES: 64 * 1024,
      SOCKET_MAX_BUFFER_BYTES: 64 * 1024,
      DATABASE_TIMEOUT_MS: 5_000,
      SEARCH_TIMEOUT_MS: 2_000,
      SEARCH_MAX_CONCURRENCY: 2,
      SEARCH_MAX_CANDIDATES: 1_000,
      RATE_LIMIT_SEARCH: { points: 10, durationSeconds: 10 },
      SOCKET_PING_INTERVAL_MS: 25_000,
      SOCKET_PING_TIMEOUT_MS: 20_000,
      SOCKET_MAX_BUFFERED_BYTES: 1024 * 1024,
      SOCKET_EVENT_RATE: { points: 60, durationSeconds: 10 },
      SOCKET_EVENT_REFUSALS: { points: 50, durationSeconds: 10 },
      RATE_LIMIT_LOGIN_FAILURES: { points: 10, durationSeconds: 15 * minutes },
      RATE_LIMIT_LOGIN_FAILURES_GLOBAL: { points: 100, durationSeconds: hours },
      LOGIN_BACKOFF_DELAY_MS: 2_000,
      PASSWORD_HASH_CONCURRENCY: 4,
      PASSWORD_HASH_QUEUE: 32,
      SOCKET_CONNECT_TIMEOUT_MS: 10_000,
      SOCKET_HANDSHAKE_RATE_PER_IP: { points: 600, durationSeconds: 60 },
      SOCKET_MAX_PENDING_PER_IP: 200,
      SOCKET_MAX_PER_USER: 50,
      LOG_LEVEL: "info",
      CORS_ORIGINS: [],
      // Issue 15: moderation has slots of its own, summaries a per-user limit, and a failing model fails closed.
      LLM_MAX_CONCURRENCY: 8,
      LLM_MODERATION_CONCURRENCY: 8,
      RATE_LIMIT_SUMMARIES: { points: 10, durationSeconds: 60 },
      MODERATION: "off",
      MODERATION_FAIL: "closed",
      JWT_SECRET: secret,
      DATABASE_URL: dbUrl,
    } satisfies Partial<Config>);
  });

  test("NODE_ENV defaults to production, so an unset NODE_ENV still demands the secrets", () => {
    const error = configError({});
    expect(namedVars(error).sort()).toEqual(["DATABASE_URL", "JWT_SECRET"]);
  });
});

describe("durations (JWT_ACCESS_TTL, REFRESH_TOKEN_TTL) in seconds", () => {
  const cases: [string, number][] = [
    ["900", 900],
    ["15m", 15 * minutes],
    ["2h", 2 * hours],
    ["30d", 30 * days],
    ["45s", 45],
    [" 10m ", 10 * minutes],
  ];
  for (const variable of ["JWT_ACCESS_TTL", "REFRESH_TOKEN_TTL"] as const) {
    test.each(cases)(`${variable}=%p → %p`, (value, seconds) => {
      expect(loadConfig({ ...prod, [variable]: value })[variable]).toBe(seconds);
    });

    test.each(["abc", "15 minutes", "-5", "1.5h", "m", "0", "0m", "500ms"])(`${variable}=%p is a ConfigError naming ${variable}`, (value) => {
      const error = configError({ ...prod, [variable]: value });
      expect(namedVars(error)).toEqual([variable]);
      expect(error.message).toContain(variable);
    });
  }
});

describe("development", () => {
  test("needs neither JWT_SECRET nor DATABASE_URL", () => {
    const config = loadConfig(dev);
    expect(config.NODE_ENV).toBe("development");
    expect(config.JWT_SECRET).toBeUndefined();
    expect(config.DATABASE_URL).toBeUndefined();
  });

  test("still validates what is given", () => {
    expect(namedVars(configError({ ...dev, JWT_SECRET: "short" }))).toEqual(["JWT_SECRET"]);
    expect(namedVars(configError({ ...dev, DATABASE_URL: "mysql://x" }))).toEqual(["DATABASE_URL"]);
  });

  test("HOST: loopback unless set (a dev server stays on this machine); outside development every interface", () => {
    expect(loadConfig(dev).HOST).toBe("127.0.0.1");
    expect(loadConfig({ ...dev, HOST: "" }).HOST).toBe("127.0.0.1");
    expect(loadConfig({ ...dev, HOST: "0.0.0.0" }).HOST).toBe("0.0.0.0");
    expect(loadConfig(prod).HOST).toBe("0.0.0.0");
    expect(loadConfig({ ...prod, HOST: "10.0.0.5" }).HOST).toBe("10.0.0.5");
  });

  test("test mode is not development: it needs both", () => {
    expect(namedVars(configError({ NODE_ENV: "test" })).sort()).toEqual(["DATABASE_URL", "JWT_SECRET"]);
  });
});

describe("required and validated variables outside development", () => {
  const cases: [string, Record<string, string | undefined>, RegExp][] = [
    ["missing JWT_SECRET", { JWT_SECRET: undefined }, /^JWT_SECRET: .*required/],
    ["a 10-character JWT_SECRET", { JWT_SECRET: "0123456789" }, /^JWT_SECRET: .*32/],
    ["a 31-character JWT_SECRET", { JWT_SECRET: "x".repeat(31) }, /^JWT_SECRET: .*32/],
    ["missing DATABASE_URL", { DATABASE_URL: undefined }, /^DATABASE_URL: .*required/],
    ["a mysql:// DATABASE_URL", { DATABASE_URL: "mysql://x" }, /^DATABASE_URL: /],
    ["a non-URL DATABASE_URL", { DATABASE_URL: "chat" }, /^DATABASE_URL: /],
    ["PORT=abc", { PORT: "abc" }, /^PORT: /],
    ["PORT=70000", { PORT: "70000" }, /^PORT: /],
    ["PORT=-1", { PORT: "-1" }, /^PORT: /],
    ["PORT=80.5", { PORT: "80.5" }, /^PORT: /],
    ["LOG_LEVEL=loud", { LOG_LEVEL: "loud" }, /^LOG_LEVEL: /],
    ["NODE_ENV=staging", { NODE_ENV: "staging" }, /^NODE_ENV: /],
    ["BODY_LIMIT_BYTES=lots", { BODY_LIMIT_BYTES: "lots" }, /^BODY_LIMIT_BYTES: /],
    ["BODY_LIMIT_BYTES=10", { BODY_LIMIT_BYTES: "10" }, /^BODY_LIMIT_BYTES: /],
    ["SOCKET_MAX_BUFFER_BYTES=x", { SOCKET_MAX_BUFFER_BYTES: "x" }, /^SOCKET_MAX_BUFFER_BYTES: /],
    ["an http:// REDIS_URL", { REDIS_URL: "http://127.0.0.1:6379" }, /^REDIS_URL: .*redis:\/\//],
    ["a REDIS_URL with a space", { REDIS_URL: "redis://a b" }, /^REDIS_URL: /],
    ["REDIS_KEY_PREFIX with a space", { REDIS_KEY_PREFIX: "chat prod:" }, /^REDIS_KEY_PREFIX: /],
    ["a 65-character REDIS_KEY_PREFIX", { REDIS_KEY_PREFIX: "x".repeat(65) }, /^REDIS_KEY_PREFIX: /],
    ["a 15-character METRICS_TOKEN", { METRICS_TOKEN: "x".repeat(15) }, /^METRICS_TOKEN: .*16/],
    ["RATE_LIMIT_TYPING=often", { RATE_LIMIT_TYPING: "often" }, /^RATE_LIMIT_TYPING: /],
    ["RATE_LIMIT_SUMMARIES=ten/1m", { RATE_LIMIT_SUMMARIES: "ten/1m" }, /^RATE_LIMIT_SUMMARIES: /],
    ["LLM_MODERATION_CONCURRENCY=0", { LLM_MODERATION_CONCURRENCY: "0" }, /^LLM_MODERATION_CONCURRENCY: /],
    ["MODERATION_FAIL=maybe", { MODERATION_FAIL: "maybe" }, /^MODERATION_FAIL: /],
    ["SOCKET_EVENT_RATE=fast", { SOCKET_EVENT_RATE: "fast" }, /^SOCKET_EVENT_RATE: /],
    ["SOCKET_EVENT_RATE=0/10s", { SOCKET_EVENT_RATE: "0/10s" }, /^SOCKET_EVENT_RATE\b.*at least 1/],
    ["SOCKET_EVENT_REFUSALS=50/0s", { SOCKET_EVENT_REFUSALS: "50/0s" }, /^SOCKET_EVENT_REFUSALS\b.*at least one second/],
    ["DATABASE_TIMEOUT_MS=50 (under 100)", { DATABASE_TIMEOUT_MS: "50" }, /^DATABASE_TIMEOUT_MS: /],
    ["DATABASE_TIMEOUT_MS=soon", { DATABASE_TIMEOUT_MS: "soon" }, /^DATABASE_TIMEOUT_MS: /],
    ["SOCKET_PING_INTERVAL_MS=0", { SOCKET_PING_INTERVAL_MS: "0" }, /^SOCKET_PING_INTERVAL_MS: /],
    ["RATE_LIMIT_SEARCH=0/10s", { RATE_LIMIT_SEARCH: "0/10s" }, /^RATE_LIMIT_SEARCH\.points: .*at least 1/],
    ["SEARCH_TIMEOUT_MS=50 (under 100)", { SEARCH_TIMEOUT_MS: "50" }, /^SEARCH_TIMEOUT_MS: /],
    ["SEARCH_MAX_CONCURRENCY=0", { SEARCH_MAX_CONCURRENCY: "0" }, /^SEARCH_MAX_CONCURRENCY: /],
    ["SEARCH_MAX_CONCURRENCY=9 (the pool has 10)", { SEARCH_MAX_CONCURRENCY: "9" }, /^SEARCH_MAX_CONCURRENCY: /],
    ["SEARCH_MAX_CANDIDATES=0", { SEARCH_MAX_CANDIDATES: "0" }, /^SEARCH_MAX_CANDIDATES: /],
    ["SEARCH_MAX_CANDIDATES=many", { SEARCH_MAX_CANDIDATES: "many" }, /^SEARCH_MAX_CANDIDATES: /],
    ["SOCKET_MAX_BUFFERED_BYTES=512 (under 1024)", { SOCKET_MAX_BUFFERED_BYTES: "512" }, /^SOCKET_MAX_BUFFERED_BYTES: /],
    ["RATE_LIMIT_LOGIN_FAILURES_GLOBAL=many", { RATE_LIMIT_LOGIN_FAILURES_GLOBAL: "many" }, /^RATE_LIMIT_LOGIN_FAILURES_GLOBAL: /],
    ["LOGIN_BACKOFF_DELAY_MS=60000 (over 30 s)", { LOGIN_BACKOFF_DELAY_MS: "60000" }, /^LOGIN_BACKOFF_DELAY_MS: /],
    ["LOGIN_BACKOFF_DELAY_MS=-1", { LOGIN_BACKOFF_DELAY_MS: "-1" }, /^LOGIN_BACKOFF_DELAY_MS: /],
    ["PASSWORD_HASH_CONCURRENCY=0", { PASSWORD_HASH_CONCURRENCY: "0" }, /^PASSWORD_HASH_CONCURRENCY: /],
    ["PASSWORD_HASH_CONCURRENCY=1.5", { PASSWORD_HASH_CONCURRENCY: "1.5" }, /^PASSWORD_HASH_CONCURRENCY: /],
    ["PASSWORD_HASH_QUEUE=-1", { PASSWORD_HASH_QUEUE: "-1" }, /^PASSWORD_HASH_QUEUE: /],
    ["PRESENCE_GRACE_MS=-1", { PRESENCE_GRACE_MS: "-1" }, /^PRESENCE_GRACE_MS: /],
    ["PRESENCE_GRACE_MS=2.5", { PRESENCE_GRACE_MS: "2.5" }, /^PRESENCE_GRACE_MS: /],
    ["PRESENCE_GRACE_MS=ten", { PRESENCE_GRACE_MS: "ten" }, /^PRESENCE_GRACE_MS: /],
    ["PRESENCE_GRACE_MS over 5 minutes", { PRESENCE_GRACE_MS: "300001" }, /^PRESENCE_GRACE_MS: /],
    ["SOCKET_CONNECT_TIMEOUT_MS=50 (under 100)", { SOCKET_CONNECT_TIMEOUT_MS: "50" }, /^SOCKET_CONNECT_TIMEOUT_MS: /],
    ["SOCKET_CONNECT_TIMEOUT_MS=120000 (over 60 s)", { SOCKET_CONNECT_TIMEOUT_MS: "120000" }, /^SOCKET_CONNECT_TIMEOUT_MS: /],
    ["SOCKET_HANDSHAKE_RATE_PER_IP=many", { SOCKET_HANDSHAKE_RATE_PER_IP: "many" }, /^SOCKET_HANDSHAKE_RATE_PER_IP: /],
    ["SOCKET_MAX_PENDING_PER_IP=0", { SOCKET_MAX_PENDING_PER_IP: "0" }, /^SOCKET_MAX_PENDING_PER_IP: /],
    ["SOCKET_MAX_PENDING_PER_IP=-5", { SOCKET_MAX_PENDING_PER_IP: "-5" }, /^SOCKET_MAX_PENDING_PER_IP: /],
    ["SOCKET_MAX_PER_USER=1.5", { SOCKET_MAX_PER_USER: "1.5" }, /^SOCKET_MAX_PER_USER: /],
    ["SOCKET_MAX_PER_USER=lots", { SOCKET_MAX_PER_USER: "lots" }, /^SOCKET_MAX_PER_USER: /],
    [
      "ping interval + timeout over 240 s (a long poll would outlive Bun's idle limit)",
      { SOCKET_PING_INTERVAL_MS: "200000", SOCKET_PING_TIMEOUT_MS: "40001" },
      /^SOCKET_PING_TIMEOUT_MS: .*240000/,
    ],
  ];
  test.each(cases)("%s → one problem naming the variable", (_, overrides, line) => {
    const error = configError({ ...prod, ...overrides });
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toMatch(line);
    expect(error.message).toContain(error.problems[0]!);
  });

  test("accepted values pass through", () => {
    const config = loadConfig({ ...prod, PORT: "8080", LOG_LEVEL: "debug", DATABASE_URL: "postgres://u@h/db", BODY_LIMIT_BYTES: "2048" });
    expect(config.PORT).toBe(8080);
    expect(config.LOG_LEVEL).toBe("debug");
    expect(config.DATABASE_URL).toBe("postgres://u@h/db");
    expect(config.BODY_LIMIT_BYTES).toBe(2048);
  });

  test("connection limits: numbers, N/duration and off pass through", () => {
    const config = loadConfig({ ...prod, SOCKET_HANDSHAKE_RATE_PER_IP: "20/10s", SOCKET_MAX_PENDING_PER_IP: "off", SOCKET_MAX_PER_USER: " 7 ", SOCKET_CONNECT_TIMEOUT_MS: "2500" });
    expect([config.SOCKET_HANDSHAKE_RATE_PER_IP, config.SOCKET_MAX_PENDING_PER_IP, config.SOCKET_MAX_PER_USER, config.SOCKET_CONNECT_TIMEOUT_MS]).toEqual([
      { points: 20, durationSeconds: 10 },
      null,
      7,
      2500,
    ]);
    expect(loadConfig({ ...prod, SOCKET_HANDSHAKE_RATE_PER_IP: "off", SOCKET_MAX_PER_USER: "off" })).toMatchObject({ SOCKET_HANDSHAKE_RATE_PER_IP: null, SOCKET_MAX_PER_USER: null });
  });

  test("Redis and metrics settings: defaults, and accepted values pass through", () => {
    const defaults = loadConfig(prod);
    expect([defaults.REDIS_URL, defaults.REDIS_KEY_PREFIX, defaults.METRICS_TOKEN]).toEqual([undefined, "chat:", undefined]);
    const config = loadConfig({ ...prod, REDIS_URL: "rediss://user:pw@cache:6380/2", REDIS_KEY_PREFIX: "chat.prod:", METRICS_TOKEN: "x".repeat(16) });
    expect([config.REDIS_URL, config.REDIS_KEY_PREFIX, config.METRICS_TOKEN]).toEqual(["rediss://user:pw@cache:6380/2", "chat.prod:", "x".repeat(16)]);
  });
});

describe("CORS_ORIGINS", () => {
  test.each([
    ["https://a.example", ["https://a.example"]],
    [" https://a.example , https://b.example ", ["https://a.example", "https://b.example"]],
    ["https://a.example,,  ,https://b.example,", ["https://a.example", "https://b.example"]],
    ["*", ["*"]],
    [" , ", []],
  ])("%p → %p", (value, list) => {
    expect(loadConfig({ ...prod, CORS_ORIGINS: value }).CORS_ORIGINS).toEqual(list);
  });
});

describe("empty strings count as unset", () => {
  test("optional variables fall back to their defaults", () => {
    const config = loadConfig({
      ...prod,
      PORT: "",
      LOG_LEVEL: "",
      JWT_ACCESS_TTL: "",
      REFRESH_TOKEN_TTL: "",
      BODY_LIMIT_BYTES: "",
      CORS_ORIGINS: "",
      HOST: "",
    });
    expect(config).toMatchObject({
      PORT: 3000,
      LOG_LEVEL: "info",
      JWT_ACCESS_TTL: 900,
      REFRESH_TOKEN_TTL: 30 * days,
      BODY_LIMIT_BYTES: 65536,
      CORS_ORIGINS: [],
      HOST: "0.0.0.0",
    });
  });

  test("an empty JWT_SECRET or DATABASE_URL is missing, not malformed", () => {
    const error = configError({ NODE_ENV: "production", JWT_SECRET: "", DATABASE_URL: "" });
    expect(error.problems).toHaveLength(2);
    expect(error.problems.find((p) => p.startsWith("JWT_SECRET:"))).toMatch(/required/);
    expect(error.problems.find((p) => p.startsWith("DATABASE_URL:"))).toMatch(/required/);
  });

  test("in development an empty JWT_SECRET and DATABASE_URL are fine", () => {
    const config = loadConfig({ ...dev, JWT_SECRET: "", DATABASE_URL: "" });
    expect(config.JWT_SECRET).toBeUndefined();
    expect(config.DATABASE_URL).toBeUndefined();
  });
});

describe("ConfigError lists every problem", () => {
  test("several bad variables → one line each, all in the message", () => {
    const error = configError({
      NODE_ENV: "production",
      PORT: "abc",
      JWT_SECRET: "short",
      DATABASE_URL: "mysql://x",
      LOG_LEVEL: "loud",
      JWT_ACCESS_TTL: "abc",
    });
    expect(namedVars(error).sort()).toEqual(["DATABASE_URL", "JWT_ACCESS_TTL", "JWT_SECRET", "LOG_LEVEL", "PORT"]);
    for (const problem of error.problems) expect(error.message).toContain(problem);
    expect(error.message.split("\n")).toHaveLength(1 + error.problems.length);
  });

  test("missing and malformed problems are reported together", () => {
    const error = configError({ NODE_ENV: "production", PORT: "abc" });
    expect(namedVars(error).sort()).toEqual(["DATABASE_URL", "JWT_SECRET", "PORT"]);
  });

  test("is an Error named ConfigError", () => {
    const error = configError({});
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe("ConfigError");
  });
});

test("unrelated environment variables are ignored", () => {
  expect(() => loadConfig({ ...prod, PATH: "/usr/bin", HOME: "/root", npm_config_x: "" })).not.toThrow();
});

describe("unknown settings (a start-up warning, src/index.ts)", () => {
  test.each([
    ["RATE_LIMIT_REGISTER", "RATE_LIMIT_TYPING"],
    ["SOCKET_EVENT_RATES", "SOCKET_EVENT_RATE"],
    ["PRESENCE_GRACE", "PRESENCE_GRACE_MS"],
    ["JWT_SECERT", "JWT_SECRET"],
    ["DATABASE_ULR", "DATABASE_URL"],
  ])("%s is named, with the closest known setting (%s)", (name, closest) => {
    expect(unknownSettings({ ...prod, [name]: "x" })).toEqual([{ name, closest }]);
  });

  test("known settings, other programs' variables and Node's own NODE_* are not", () => {
    expect(unknownSettings({ ...prod, PORT: "1", RATE_LIMIT_SEARCH: "off", PATH: "/usr/bin", HOME: "/root", NODE_OPTIONS: "--x", NODE_EXTRA_CA_CERTS: "/ca", TEST_DATABASE_URL: "x" })).toEqual([]);
  });

  test("the server process logs one warning per unknown setting and starts anyway", async () => {
    const database = await createTestDatabase();
    const server = await startServerProcess(productionEnv(database.url, { SOCKET_EVENT_RATES: "5/1s", RATE_LIMIT_REGISTER: "off" }));
    try {
      const warned = server.logs.filter((line) => line.level === 40 && typeof line.variable === "string");
      expect(warned.map((line) => [line.variable, line.closest])).toEqual([
        ["RATE_LIMIT_REGISTER", "RATE_LIMIT_TYPING"],
        ["SOCKET_EVENT_RATES", "SOCKET_EVENT_RATE"],
      ]);
      expect(String(warned[1]!.msg)).toContain("did you mean SOCKET_EVENT_RATE?");
    } finally {
      await server.stop();
    }
  });
});
