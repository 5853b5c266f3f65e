import type { RedisClient } from "../lib/redis.ts";

/**
 * Who is online, counted per user rather than per socket (api.md §8): a user is online from
 * their first socket's connection until their last one closes, however many tabs they have.
 * In this process for one instance; in Redis for several (api.md §9), see below.
 */
export interface Presence {
  /** Counts a socket in; true when it is the user's first (they just came online). */
  connected(userId: number): Promise<boolean>;
  /** Counts a socket out; true when it was the user's last (they just went offline). */
  disconnected(userId: number): Promise<boolean>;
  /** The ids of online users, ascending. */
  online(): Promise<number[]>;
  /** Stops this instance's heartbeat (with Redis); its counts then expire unless sockets close first. */
  close(): void;
}

/** How long an instance's counts outlive its last heartbeat (a beat every third of it). */
const INSTANCE_TTL_MS = 30_000;

export function createPresence(redis?: RedisClient, { instanceTtlMs = INSTANCE_TTL_MS } = {}): Presence {
  return redis ? redisPresence(redis, instanceTtlMs) : memoryPresence();
}

function memoryPresence(): Presence {
  const sockets = new Map<number, number>();
  return {
    async connected(userId) {
      const count = (sockets.get(userId) ?? 0) + 1;
      sockets.set(userId, count);
      return count === 1;
    },
    async disconnected(userId) {
      const count = (sockets.get(userId) ?? 0) - 1;
      if (count > 0) sockets.set(userId, count);
      else sockets.delete(userId);
      return count <= 0;
    },
    async online() {
      return ascending([...sockets.keys()]);
    },
    close() {},
  };
}

// Each instance counts its sockets per user in a hash of its own, kept alive by a heartbeat: if
// the instance dies without closing its sockets, the hash expires and its users stop counting.
// The scripts sum a user's counts over the live instances atomically, so exactly one socket
// sees a user's first connection and one their last, wherever they are.
const countScript = `
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
local total = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local c = redis.call('HGET', ARGV[3] .. 'presence:instance:' .. id, ARGV[1])
  if c then total = total + tonumber(c) end
end
return total`;

const onlineScript = `
local online = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. 'presence:instance:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[1], id)
  else
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      if tonumber(fields[i + 1]) > 0 then online[fields[i]] = true end
    end
  end
end
local ids = {}
for id in pairs(online) do table.insert(ids, id) end
return ids`;

function redisPresence(redis: RedisClient, ttlMs: number): Presence {
  const instanceId = crypto.randomUUID();
  const prefix = redis.options.keyPrefix ?? "";
  const instanceKey = `presence:instance:${instanceId}`;
  const instancesKey = "presence:instances";
  const count = async (userId: number, delta: 1 | -1) =>
    Number(await redis.eval(countScript, 2, instanceKey, instancesKey, String(userId), String(delta), prefix, String(ttlMs), instanceId));
  // Failures are left to /readyz to report; a missed beat only shortens the hash's life.
  const beat = () => void redis.pexpire(instanceKey, ttlMs).catch(() => undefined);
  const heartbeat = setInterval(beat, Math.max(50, Math.floor(ttlMs / 3)));
  heartbeat.unref();
  return {
    async connected(userId) {
      return (await count(userId, 1)) === 1;
    },
    async disconnected(userId) {
      return (await count(userId, -1)) <= 0;
    },
    async online() {
      const ids = (await redis.eval(onlineScript, 1, instancesKey, prefix)) as string[];
      return ascending(ids.map(Number));
    },
    close() {
      clearInterval(heartbeat);
    },
  };
}

const ascending = (ids: number[]) => ids.sort((a, b) => a - b);
