import { afterAll } from "bun:test";
import { io as ioClient, type Socket } from "socket.io-client";
import { createApp, type App } from "../../src/app.ts";
import { loadConfig, type Config } from "../../src/config.ts";
import { createLogger, type Logger } from "../../src/lib/logger.ts";
import { createRedis, redisConnected } from "../../src/lib/redis.ts";
import type { ClientToServerEvents, ServerToClientEvents } from "../../src/realtime/contract.ts";
import { serve, type RunningServer } from "../../src/server.ts";
import { createTestDatabase, type TestDatabase } from "./db.ts";
import { testMetricsToken } from "./env.ts";

/** The machine's Redis (api.md §9 tests); TEST_REDIS_URL overrides it. */
export const testRedisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export const testJwtSecret = "test-secret-that-is-at-least-32-characters-long";

export type ChatClient = Socket<ServerToClientEvents, ClientToServerEvents>;
export type Transport = "polling" | "websocket";
export const transports: Transport[] = ["polling", "websocket"];

/** The config a test server runs with; `overrides` use the same variable names as production. */
export function testConfig(databaseUrl: string, overrides: Record<string, string> = {}): Config & { JWT_SECRET: string } {
  const config = loadConfig({
    NODE_ENV: "test",
    DATABASE_URL: databaseUrl,
    JWT_SECRET: testJwtSecret,
    HOST: "127.0.0.1",
    PORT: "0",
    LOG_LEVEL: "silent",
    // Every test registers from 127.0.0.1 and sends in bursts; the limit tests turn these on.
    RATE_LIMIT_AUTH_PER_IP: "off",
    RATE_LIMIT_LOGIN_FAILURES: "off",
    RATE_LIMIT_LOGIN_FAILURES_GLOBAL: "off",
    RATE_LIMIT_MESSAGES_BURST: "off",
    RATE_LIMIT_MESSAGES_SUSTAINED: "off",
    RATE_LIMIT_SUMMARIES: "off",
    METRICS_TOKEN: testMetricsToken,
    SOCKET_EVENT_RATE: "off",
    // Tests register users by the dozen at once; test/password-hashing.test.ts tests the queue's bound.
    PASSWORD_HASH_QUEUE: "10000",
    SOCKET_HANDSHAKE_RATE_PER_IP: "off",
    RATE_LIMIT_SEARCH: "off",
    // Offline at once, as the presence tests expect; test/presence-grace.test.ts tests the grace.
    PRESENCE_GRACE_MS: "0",
    ...overrides,
  });
  return { ...config, JWT_SECRET: config.JWT_SECRET ?? testJwtSecret };
}

export interface TestServer {
  url: string;
  app: App;
  database: TestDatabase;
  server: RunningServer;
  /** Registers a user over REST and returns the auth result. */
  register(username?: string, password?: string): Promise<{ token: string; refreshToken: string; user: { id: number; username: string; role: string; createdAt: string } }>;
  /** A connected socket.io-client (resolves once connected). */
  connect(token: string, transport?: Transport): Promise<ChatClient>;
  stop(): Promise<void>;
}

/** A user registered through `TestServer.register`: its auth result. */
export type Registered = Awaited<ReturnType<TestServer["register"]>>;

/** A parsed JSON body the tests inspect freely. */
export type Json = any;

let userCounter = 0;
export const uniqueName = (prefix = "user") => `${prefix}_${++userCounter}_${crypto.randomUUID().slice(0, 6)}`;

/**
 * A real server on an ephemeral port over a fresh database, with the same `createApp`
 * and `serve` the entry point uses. Stopped and dropped after the file's tests.
 */
export async function startTestServer(
  options: { env?: Record<string, string>; database?: TestDatabase; logger?: Logger; redisPrefix?: string; redisUrl?: string } = {},
): Promise<TestServer> {
  const database = options.database ?? (await createTestDatabase());
  const config = testConfig(database.url, options.env);
  // With `redisPrefix`, the local Redis (or `redisUrl`) under keys of the test's own (instances of one test share a prefix).
  const redis = options.redisPrefix ? createRedis(options.redisUrl ?? testRedisUrl, options.redisPrefix) : undefined;
  const app = createApp({ config: { ...config, REDIS_KEY_PREFIX: options.redisPrefix ?? config.REDIS_KEY_PREFIX }, db: database.db, logger: options.logger ?? createLogger(config.LOG_LEVEL), redis });
  // As the entry point does: Redis commands fail rather than wait for the connection.
  if (redis) await redisConnected(redis);
  const server = serve(app, config);
  const clients: ChatClient[] = [];

  const testServer: TestServer = {
    url: server.url,
    app,
    database,
    server,
    async register(username = uniqueName(), password = "correct horse battery") {
      const res = await fetch(`${server.url}/api/auth/register`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username, password }),
      });
      if (res.status !== 201) throw new Error(`register failed: ${res.status} ${await res.text()}`);
      return res.json() as Promise<Awaited<ReturnType<TestServer["register"]>>>;
    },
    connect(token, transport = "websocket") {
      const socket: ChatClient = ioClient(server.url, {
        auth: { token },
        transports: [transport],
        reconnection: false,
        forceNew: true,
      });
      clients.push(socket);
      return new Promise((resolve, reject) => {
        socket.once("connect", () => resolve(socket));
        socket.once("connect_error", reject);
      });
    },
    async stop() {
      for (const client of clients) client.disconnect();
      await server.stop();
      redis?.disconnect();
    },
  };
  afterAll(() => testServer.stop());
  return testServer;
}

/** Resolves with the next `event` on `socket`, or rejects after `ms`. */
export function nextEvent<T = unknown>(socket: ChatClient, event: string, ms = 5_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${event}" within ${ms} ms`)), ms);
    (socket as unknown as { once(e: string, f: (v: T) => void): void }).once(event, (value: T) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** Emits `message` with an ack and resolves with the ack's result. */
export function sendWithAck(socket: ChatClient, payload: unknown, ms = 5_000): Promise<any> {
  return socket.timeout(ms).emitWithAck("message", payload as never);
}
