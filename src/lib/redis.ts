import { Redis, type RedisOptions } from "ioredis";
import { clearSocketTimeout } from "./internals.ts";
import type { Logger } from "./logger.ts";

export type RedisClient = Redis;

/** The longest one Redis command may take, and the longest a connection may owe an answer before it is dropped. */
const COMMAND_TIMEOUT_MS = 1_000;
/** Reconnection attempts while Redis is away: quickly at first, then once a second. */
const retryStrategy = (attempt: number) => Math.min(attempt * 100, 1_000);

/**
 * The one Redis connection of an instance (api.md §9), shared by the rate limiters, presence,
 * the publish gate and the Socket.IO adapter's publishing. Redis is never worth waiting for:
 * while it is away every command fails at once (no offline queue, no resending after a
 * reconnection), and on a connection that stops answering (a partition: nothing comes back,
 * nothing closes) a command fails after `timeoutMs` and the connection is dropped and made
 * again. Each user of it has its way to do without (insurance limiters, local presence,
 * local-only broadcasts); see `watchRedis` for how the outage is reported.
 */
export function createRedis(url: string, keyPrefix: string, { timeoutMs = COMMAND_TIMEOUT_MS } = {}): RedisClient {
  const redis = new Redis(url, {
    connectionName: "chat-backend",
    keyPrefix,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    connectTimeout: 5 * timeoutMs,
    retryStrategy,
  });
  return clearingSocketTimeoutOnClose(redis);
}

/**
 * ioredis 5 keeps a connection's `socketTimeout` timer after that connection closes, and when it
 * fires it destroys whatever connection the client has by then: a healthy one made just after
 * Redis came back, so that one outage looks like two (redis/ioredis#2147; the fix, #2148, came
 * after the last 5.x release). Until then the timer is cleared here on every close, as that fix does
 * (through src/lib/internals.ts, which refuses to start with another ioredis version than this was checked on).
 */
function clearingSocketTimeoutOnClose(redis: Redis): Redis {
  redis.on("close", () => clearSocketTimeout(redis));
  return redis;
}

/**
 * Resolves once the client is connected, or has failed to connect once (the instance then starts
 * without Redis and catches up when it comes: see `watchRedis`), or after `ms`.
 */
export function redisConnected(redis: RedisClient, ms = 5_000): Promise<void> {
  if (redis.status === "ready") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const event of ["ready", "error", "end"]) redis.off(event, done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const event of ["ready", "error", "end"]) redis.once(event, done);
  });
}

// What the Socket.IO Redis Streams adapter (0.3.1, checked at start-up by src/lib/internals.ts) does with the client it is given:
// - it publishes with it: XADD for broadcasts and room changes, PUBLISH for `serverSideEmit`. A
//   broadcast awaits its XADD, catches a failure (debug log only) and then delivers to this
//   instance's sockets; a failed PUBLISH is not caught at all (an unhandled rejection);
// - it calls `duplicate()` twice, for a connection that loops on `XREAD BLOCK 5000` (retrying at
//   once on an error) and one for SUBSCRIBE. With the options above those two would break: the
//   command timeout would cut every blocking read, and without an offline queue a failed XREAD
//   would be retried at once, forever, starving the event loop while Redis is away.
/** The adapter's own connections: commands wait for Redis to come back instead of failing. */
const adapterConnectionOptions = (timeoutMs: number, blockMs: number): Partial<RedisOptions> => ({
  enableOfflineQueue: true,
  maxRetriesPerRequest: null,
  commandTimeout: undefined,
  // A blocking read answers at least every `blockMs`: a connection silent for longer is dead.
  socketTimeout: blockMs + 5 * timeoutMs,
});

/** The adapter's blocking read time (its `blockTimeInMs` default). */
const ADAPTER_BLOCK_MS = 5_000;

/**
 * `redis` as the Socket.IO Redis Streams adapter should get it: its reading connections wait
 * for Redis (so XREAD resumes from its last offset once Redis is back), and its PUBLISH
 * failures are caught. Its XADDs fail fast like every other command, so a broadcast still
 * reaches this instance's own sockets at once during an outage.
 */
export function forStreamsAdapter(redis: RedisClient): RedisClient {
  const timeoutMs = redis.options.commandTimeout ?? COMMAND_TIMEOUT_MS;
  const quiet = <T>(promise: Promise<T>) => {
    promise.catch(() => undefined);
    return promise;
  };
  return new Proxy(redis, {
    get(target, property) {
      if (property === "duplicate") {
        return (override?: Partial<RedisOptions>) => {
          const client = clearingSocketTimeoutOnClose(target.duplicate({ ...adapterConnectionOptions(timeoutMs, ADAPTER_BLOCK_MS), ...override }));
          // SUBSCRIBE is not awaited by the adapter either.
          const subscribe = client.subscribe.bind(client) as (...channels: string[]) => Promise<unknown>;
          client.subscribe = ((...channels: string[]) => quiet(subscribe(...channels))) as typeof client.subscribe;
          return client;
        };
      }
      if (property === "publish") return (...args: Parameters<Redis["publish"]>) => quiet(target.publish(...args));
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Whether Redis is reachable, as last seen; `check()` asks it again. */
export interface RedisHealth {
  readonly available: boolean;
  /** A PING, within the command timeout: true when it answered. */
  check(): Promise<boolean>;
  /** Runs `listener` each time Redis comes back after an outage, with when the outage was noticed (epoch ms). */
  onRecovered(listener: (noticedAt: number) => void): void;
}

/**
 * Follows the client's connection and logs each outage once: "redis unavailable" (warn, with the
 * error) when it goes, "redis available again" (info) when it is back, however many commands fail
 * and reconnection attempts are made in between. A PING every `intervalMs` while connected finds
 * a connection that stopped answering even when nothing else is sent.
 */
export function watchRedis(redis: RedisClient, logger: Logger, { intervalMs = 2_000 } = {}): RedisHealth {
  // undefined until the first connection succeeds or fails.
  let up: boolean | undefined = redis.status === "ready" ? true : undefined;
  let noticedAt = 0;
  const recovered = new Set<(noticedAt: number) => void>();

  const down = (error: unknown) => {
    // A deliberate close (quit at shutdown) is no outage.
    if (redis.status === "end" || up === false) return;
    up = false;
    noticedAt = Date.now();
    logger.warn({ err: error }, "redis unavailable");
  };
  const back = () => {
    const wasDown = up === false;
    up = true;
    if (!wasDown) return;
    logger.info({ outageMs: Date.now() - noticedAt }, "redis available again");
    for (const listener of recovered) listener(noticedAt);
  };
  // ioredis emits "error" on every failed attempt; without a listener it would print each one.
  redis.on("error", down);
  redis.on("close", () => down(new Error("Connection to Redis closed")));
  redis.on("ready", back);

  const check = async () => {
    try {
      await redis.ping();
      if (redis.status === "ready") back();
      return true;
    } catch (error) {
      down(error);
      return false;
    }
  };
  const timer = setInterval(() => {
    if (redis.status === "ready") void check();
  }, intervalMs);
  timer.unref();
  // Closed for good (the instance stops).
  redis.once("end", () => clearInterval(timer));

  return {
    get available() {
      return up === true;
    },
    check,
    onRecovered(listener) {
      recovered.add(listener);
    },
  };
}
