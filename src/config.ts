import { closest } from "fastest-levenshtein";
import { z } from "zod";

/**
 * Every setting the service reads, validated once at start-up. Nothing else in
 * `src/` touches `process.env`: the entry point calls `loadConfig(process.env)`
 * and passes the result down.
 */
const duration = z
  .string()
  .trim()
  .regex(/^\d+\s*(s|m|h|d)?$/, 'a duration in whole seconds or units, such as "900", "15m", "30d"')
  .transform(parseDurationSeconds)
  .pipe(z.number().int().min(1, "must be at least one second"));

/** "N/duration" (at most N events per duration), or "off". */
const rateLimit = z
  .string()
  .trim()
  .regex(/^(off|\d+\s*\/\s*\d+\s*(s|m|h|d)?)$/, 'a limit such as "30/1m" (30 per minute), or "off"')
  .transform((value) => {
    if (value === "off") return null;
    const [points = "0", window = "1"] = value.split("/").map((part) => part.trim());
    return { points: Number(points), durationSeconds: parseDurationSeconds(window) };
  })
  .pipe(
    z
      .object({
        points: z.number().int().min(1, "must allow at least 1"),
        durationSeconds: z.number().int().min(1, "the window must be at least one second"),
      })
      .nullable(),
  );

export type RateLimitSetting = z.output<typeof rateLimit>;

/** A positive whole number, or "off" (no cap: null). */
const cap = z
  .string()
  .trim()
  .regex(/^(off|\d+)$/, 'a whole number such as "50", or "off"')
  .transform((value) => (value === "off" ? null : Number(value)))
  .pipe(z.number().int().min(1, "must be at least 1").nullable());

const list = z
  .string()
  .default("")
  .transform((v) =>
    v
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
  );

export const envSchema = z
  .object({
    NODE_ENV: z.enum(["development", "production", "test"]).default("production"),
    PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    /** Unset: 127.0.0.1 in development (a dev server with a dev secret on disk stays on this machine), every interface otherwise. */
    HOST: z.string().trim().min(1).optional(),
    DATABASE_URL: z
      .string()
      .trim()
      .regex(/^postgres(ql)?:\/\//, "a postgresql:// connection URL")
      .optional(),
    DATA_DIR: z.string().trim().min(1).default(".data"),
    JWT_SECRET: z.string().min(32, "at least 32 characters").optional(),
    JWT_ACCESS_TTL: duration.default(15 * 60),
    REFRESH_TOKEN_TTL: duration.default(30 * 24 * 60 * 60),
    CORS_ORIGINS: list,
    /** Usernames that are made admins at start-up and at registration. */
    ADMIN_USERNAMES: list,
    /** How many reverse-proxy hops in front of the service to trust for X-Forwarded-For. */
    TRUST_PROXY: z.coerce.number().int().min(0).max(10).default(0),
    RATE_LIMIT_AUTH_PER_IP: rateLimit.default({ points: 30, durationSeconds: 60 }),
    /** Failed logins per (folded username, client address); once spent, that address is refused for that username. */
    RATE_LIMIT_LOGIN_FAILURES: rateLimit.default({ points: 10, durationSeconds: 15 * 60 }),
    /** Failed logins per folded username from every address; once spent, its logins are slowed, never refused. */
    RATE_LIMIT_LOGIN_FAILURES_GLOBAL: rateLimit.default({ points: 100, durationSeconds: 60 * 60 }),
    /** The wait before answering a login to a username whose RATE_LIMIT_LOGIN_FAILURES_GLOBAL is spent. */
    LOGIN_BACKOFF_DELAY_MS: z.coerce.number().int().min(0).max(30_000).default(2_000),
    /** argon2id hashes and verifications running at once per instance (19 MiB each while they run: lib/password.ts). */
    PASSWORD_HASH_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
    /** Hashes waiting for a turn at most; past it a login, registration or password change is answered 503 at once. */
    PASSWORD_HASH_QUEUE: z.coerce.number().int().min(0).max(10_000).default(32),
    RATE_LIMIT_MESSAGES_BURST: rateLimit.default({ points: 20, durationSeconds: 10 }),
    RATE_LIMIT_MESSAGES_SUSTAINED: rateLimit.default({ points: 120, durationSeconds: 60 }),
    /** `typing` events relayed per user and channel; the rest are dropped quietly. */
    RATE_LIMIT_TYPING: rateLimit.default({ points: 1, durationSeconds: 2 }),
    /** Summary requests per user (cache hits included): each can cost model calls, so one user cannot flood the model. */
    RATE_LIMIT_SUMMARIES: rateLimit.default({ points: 10, durationSeconds: 60 }),
    /**
     * Client events per socket, of any name and payload, counted in memory before anything else
     * runs; past it an event is refused RATE_LIMITED without touching the database. 60 per 10 s
     * is over twice what a client at every other limit sends (20 messages and 5 typing events per
     * 10 s), and holds a flooding socket to 6 events a second.
     */
    SOCKET_EVENT_RATE: rateLimit.default({ points: 60, durationSeconds: 10 }),
    /** Refusals of SOCKET_EVENT_RATE per socket; one more and the socket is disconnected (one warning logged). */
    SOCKET_EVENT_REFUSALS: rateLimit.default({ points: 50, durationSeconds: 10 }),
    /** Searches per user (api.md §7): search-as-you-type sends a few a second while typing, and no more. */
    RATE_LIMIT_SEARCH: rateLimit.default({ points: 10, durationSeconds: 10 }),
    /** Several instances share broadcasts, presence, revocations and limits through this Redis (api.md §9). */
    REDIS_URL: z.string().regex(/^rediss?:\/\/\S+$/, "must be a redis:// or rediss:// URL").optional(),
    /** Prefix of every Redis key and stream of this service, so several deployments can share one Redis. */
    REDIS_KEY_PREFIX: z.string().regex(/^[\w:.-]{1,64}$/, "must be 1-64 of letters, digits, _ : . -").default("chat:"),
    /**
     * With REDIS_URL: how long an instance's users count after its last heartbeat (a beat every
     * third of it). An instance that dies without closing its sockets has its users announced
     * offline by another instance within 4/3 of this; shorter notices a crash sooner, but an
     * instance whose event loop stalls that long is taken for dead (it announces its users again).
     */
    PRESENCE_INSTANCE_TTL_MS: z.coerce.number().int().min(1_000).max(600_000).default(30_000),
    /** How long after a user's last socket closes they are announced offline, unless back (presence.socket.ts); 0: at once. */
    PRESENCE_GRACE_MS: z.coerce.number().int().min(0).max(300_000).default(10_000),
    /** When set, GET /metrics wants `Authorization: Bearer <METRICS_TOKEN>`. */
    METRICS_TOKEN: z.string().min(16, "at least 16 characters").optional(),
    LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).default(64 * 1024),
    SOCKET_MAX_BUFFER_BYTES: z.coerce.number().int().min(1024).default(64 * 1024),
    SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(0).default(10_000),
    /**
     * The longest any database round trip may take, connecting included: past it the request
     * fails with UNAVAILABLE and the connection is discarded, so a database that stops answering
     * costs a bounded wait, never a hang.
     */
    DATABASE_TIMEOUT_MS: z.coerce.number().int().min(100).default(5_000),
    /**
     * The longest one search may take, its wait for a free search slot included (capped at
     * DATABASE_TIMEOUT_MS): past it the search is cancelled and answered 503 UNAVAILABLE.
     */
    SEARCH_TIMEOUT_MS: z.coerce.number().int().min(100).default(2_000),
    /**
     * Searches running at once per instance, each on one database connection of the pool (10), so
     * searches can never take the connections sends and reads need; the rest wait their turn.
     */
    SEARCH_MAX_CONCURRENCY: z.coerce.number().int().min(1).max(8).default(2),
    /** A search ranks only the newest this-many matching messages, so its work does not grow with the matches. */
    SEARCH_MAX_CANDIDATES: z.coerce.number().int().min(1).max(100_000).default(1_000),
    /**
     * How long the channel event log keeps an event (api.md §11); older ones are pruned, and a client
     * asking for events from before that gets `limited` (REST) or `resync` (socket). Fractions allowed.
     */
    EVENT_LOG_RETENTION_HOURS: z.coerce.number().positive().max(24 * 3650).default(24 * 30),
    /** How long an instance holds a channel's later event for an earlier one before reading it from the database (api.md §11). */
    EVENT_GAP_WAIT_MS: z.coerce.number().int().min(1).max(60_000).default(250),
    /** Events a socket's resume (`auth.since`) replays per channel at most; a channel further behind gets `resync`. */
    RESUME_MAX_EVENTS: z.coerce.number().int().min(1).max(100_000).default(1_000),
    /** Socket.IO heartbeat: a ping every interval; a client that has not answered within the timeout is dropped. */
    SOCKET_PING_INTERVAL_MS: z.coerce.number().int().min(100).default(25_000),
    SOCKET_PING_TIMEOUT_MS: z.coerce.number().int().min(100).default(20_000),
    /** Bytes the server holds for one client that is not reading; past it the client is disconnected. */
    SOCKET_MAX_BUFFERED_BYTES: z.coerce.number().int().min(1024).default(1024 * 1024),
    /** How long a new Engine.IO session may take to connect (authenticate) before it is closed (Socket.IO's connectTimeout). */
    SOCKET_CONNECT_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(10_000),
    /** New Engine.IO sessions (handshakes) per client address; past it 429 RATE_LIMITED. */
    SOCKET_HANDSHAKE_RATE_PER_IP: rateLimit.default({ points: 600, durationSeconds: 60 }),
    /** Engine.IO sessions of one client address open at once and not yet authenticated; past it 429 RATE_LIMITED. */
    SOCKET_MAX_PENDING_PER_IP: cap.default(200),
    /** Sockets of one user connected to this instance at once; past it connect_error "Too many connections". */
    SOCKET_MAX_PER_USER: cap.default(50),
    /** An OpenAI-compatible chat-completions server (api.md §10): "http://host:8080/v1". Unset: LLM features off. */
    LLM_BASE_URL: z.url({ protocol: /^https?$/, error: "an http:// or https:// URL" }).optional(),
    LLM_API_KEY: z.string().min(1).optional(),
    /** The model name sent with every request (required with LLM_BASE_URL). */
    LLM_MODEL: z.string().trim().min(1).max(200).optional(),
    /** The longest one model call may take, its retries and its wait for a free slot included. */
    LLM_TIMEOUT_MS: z.coerce.number().int().min(100).default(5_000),
    /** Retries of a call that failed fast (a 5xx, a refused connection), within LLM_TIMEOUT_MS. */
    LLM_MAX_RETRIES: z.coerce.number().int().min(0).max(5).default(1),
    /** Summary calls in flight at once, per instance; the rest wait their turn (within their timeout). */
    LLM_MAX_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(8),
    /**
     * Moderation calls in flight at once, per instance: slots of their own, so a check in the write
     * path never waits behind a summary (issue 15). The model server sees up to the sum of both.
     */
    LLM_MODERATION_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(8),
    /** The model's context window in tokens: summaries cut long ranges into chunks that fit it. */
    LLM_CONTEXT_TOKENS: z.coerce.number().int().min(512).default(8_192),
    /** off: no moderation; flag: deliver, and list what is caught for moderators; block: refuse before storing. */
    MODERATION: z.enum(["off", "flag", "block"]).default("off"),
    /**
     * When the model fails or times out: closed (default) refuses the message (block) or flags it
     * (flag); open lets it through unchecked. Closed by default: otherwise whoever can make the model
     * slow (a flood of other work, an outage) gets messages past moderation.
     */
    MODERATION_FAIL: z.enum(["open", "closed"]).default("closed"),
    /** The local word list, checked before the model (whole words, case-insensitive), comma-separated. */
    MODERATION_WORDS: list,
  })
  .superRefine(
    (env, ctx) => {
      const dev = env.NODE_ENV === "development";
      if (!dev && !env.JWT_SECRET) {
        ctx.addIssue({
          code: "custom",
          path: ["JWT_SECRET"],
          message: "required outside development (at least 32 random characters)",
        });
      }
      // Bun closes a connection idle for 255 s at most, and a long poll waits up to interval + timeout.
      if (env.SOCKET_PING_INTERVAL_MS + env.SOCKET_PING_TIMEOUT_MS > 240_000) {
        ctx.addIssue({
          code: "custom",
          path: ["SOCKET_PING_TIMEOUT_MS"],
          message: "SOCKET_PING_INTERVAL_MS + SOCKET_PING_TIMEOUT_MS must be at most 240000 (a long poll lasts up to their sum)",
        });
      }
      if (env.LLM_BASE_URL && !env.LLM_MODEL) {
        ctx.addIssue({ code: "custom", path: ["LLM_MODEL"], message: "required with LLM_BASE_URL (the model name the server expects)" });
      }
      if (!dev && !env.DATABASE_URL) {
        ctx.addIssue({
          code: "custom",
          path: ["DATABASE_URL"],
          message: "required outside development (the embedded database is for `bun run dev` only)",
        });
      }
    },
    // Run even when another variable is malformed, so one start-up names every problem.
    { when: () => true },
  );

export type Config = Omit<z.output<typeof envSchema>, "HOST"> & { HOST: string };

/** A configuration problem, with one line per offending variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** Parses the environment; throws ConfigError naming each bad or missing variable. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  // Empty strings are what `.env` files and compose leave for "unset".
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const result = envSchema.safeParse(present);
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((i) => `${i.path.join(".") || "(env)"}: ${i.message}`));
  }
  // HOST's default depends on NODE_ENV (see HOST above).
  return { ...result.data, HOST: result.data.HOST ?? (result.data.NODE_ENV === "development" ? "127.0.0.1" : "0.0.0.0") };
}

function parseDurationSeconds(value: string): number {
  const [, amount = "0", unit = "s"] = /^(\d+)\s*(s|m|h|d)?$/.exec(value) ?? [];
  const perUnit = { s: 1, m: 60, h: 3600, d: 86400 }[unit] ?? 1;
  return Number(amount) * perUnit;
}

/**
 * Environment variables that look like settings of ours but are not (a typo, a name from another
 * version): those whose first word is the first word of one of our keys (RATE_, SOCKET_, PRESENCE_…,
 * not NODE_: Node's own live there), each with the key it is closest to. Ignored by the config (zod
 * drops unknown keys), so the entry point warns about them at start-up.
 */
export function unknownSettings(env: Record<string, string | undefined>): { name: string; closest: string }[] {
  const keys = Object.keys(envSchema.shape);
  const known = new Set(keys);
  const prefixes = new Set(keys.filter((key) => key.includes("_") && !key.startsWith("NODE_")).map((key) => key.slice(0, key.indexOf("_") + 1)));
  return Object.keys(env)
    .filter((name) => !known.has(name) && [...prefixes].some((prefix) => name.startsWith(prefix)))
    .sort()
    .map((name) => ({ name, closest: closest(name, keys) }));
}
