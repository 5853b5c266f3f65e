import { createAdapter } from "@socket.io/redis-streams-adapter";
import type { Config } from "./config.ts";
import type { Logger } from "./lib/logger.ts";
import { limiterFactory } from "./lib/rate-limit.ts";
import { forStreamsAdapter, watchRedis, type RedisClient } from "./lib/redis.ts";
import type { EventRelay } from "./messages/fanout.ts";
import { createRecentMessages, type RecentMessages } from "./messages/recent-messages.ts";
import { createPresence, type Presence, type PresenceOptions } from "./presence/presence.service.ts";
import type { ChatServer } from "./realtime/rooms.ts";
import { peerRevocations } from "./sessions/revocations.ts";
import type { AccessGuard } from "./sessions/access-guard.ts";
import type { PeerNotifier } from "./sessions/revocations.ts";

/**
 * One instance or several (api.md §9), decided here and nowhere else: what the service shares
 * through Redis when REDIS_URL is set, and what it keeps in this process otherwise.
 * (Centrifugo's `configureEngines` is the picture: one switch, every engine chosen at once.)
 */
export interface Topology {
  /** True with Redis: other instances exist and hear about membership changes and events. */
  clustered: boolean;
  /** Socket.IO's adapter: Redis streams, or socket.io's in-memory default (undefined). */
  adapter: ReturnType<typeof createAdapter> | undefined;
  /** Redis's reachability, for /readyz and the metrics (undefined on one instance). */
  redisHealth: ReturnType<typeof watchRedis> | undefined;
  /** Rate limiters: in Redis, shared by every instance, or in this process. */
  createLimiter: ReturnType<typeof limiterFactory>;
  /** Who is online: counted in this process, or per instance in Redis (options apply there: heartbeat, lapsed instances). */
  createPresence(options: PresenceOptions): Presence;
  /** The newest history page per channel in memory: one instance only, whose events all pass through it. */
  recent: RecentMessages | undefined;
  /** How committed events reach the other instances' sockets (messages/fanout.ts). */
  relay(io: ChatServer): EventRelay | undefined;
  /** How revocations reach the other instances' access caches. */
  revocationPeers(io: ChatServer, guard: AccessGuard): PeerNotifier | undefined;
}

export function configureTopology({ redis, logger }: { config: Config; redis?: RedisClient; logger: Logger }): Topology {
  if (!redis) {
    return {
      clustered: false,
      adapter: undefined,
      redisHealth: undefined,
      createLimiter: limiterFactory(undefined),
      createPresence: () => createPresence(),
      recent: createRecentMessages(),
      relay: () => undefined,
      revocationPeers: () => undefined,
    };
  }
  return {
    clustered: true,
    // The Redis client prefixes every key with REDIS_KEY_PREFIX, the adapter's stream included.
    adapter: createAdapter(forStreamsAdapter(redis), { streamName: "socket.io" }),
    // Logs each Redis outage once and feeds /readyz; meanwhile every user of Redis does without it (api.md §9).
    redisHealth: watchRedis(redis, logger),
    createLimiter: limiterFactory(redis),
    createPresence: (options) => createPresence(redis, options),
    // Another instance's writes never pass through this one's cache: history is read from the database.
    recent: undefined,
    relay: (io) => redisRelay(io, redis),
    revocationPeers: (io, guard) => peerRevocations(io, guard),
  };
}

/** Events through the adapter's stream as server-side emits: every other instance gets each one. */
function redisRelay(io: ChatServer, redis: RedisClient): EventRelay {
  return {
    send: (event) => io.serverSideEmit("channel:event", event),
    listen: (receive) => void io.on("channel:event", receive),
    // Broadcasts sent while Redis was away are lost: once it is back, each channel's head is compared.
    onGap: (lost) => void redis.on("ready", lost),
  };
}
