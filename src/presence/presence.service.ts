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

// Rewrites the instance's hash from this instance's own counts (after Redis missed some).
const rewriteScript = `
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if #ARGV > 2 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
redis.call('SADD', KEYS[2], ARGV[2])`;

// While Redis is away (api.md §9), presence falls back to this instance's own sockets, which it
// counts in memory as well: a user's first socket here and their last one here are announced
// (to this instance's clients: broadcasts do not leave it meanwhile) and `online()` lists the
// users connected here. Counts Redis missed are written back, from the memory ones, as soon as
// it answers again (on reconnection, at the next heartbeat or the next count, whichever first).
function redisPresence(redis: RedisClient, ttlMs: number): Presence {
  const instanceId = crypto.randomUUID();
  const prefix = redis.options.keyPrefix ?? "";
  const instanceKey = `presence:instance:${instanceId}`;
  const instancesKey = "presence:instances";
  const sockets = new Map<number, number>();
  // Bumped by every failed write: while above `written`, the hash in Redis is not to be trusted.
  let missed = 0;
  let written = 0;
  // Bumped by every count here; a rewrite resolves with the value its snapshot included.
  let changes = 0;
  let rewriting: Promise<number> | undefined;

  const failed = () => void missed++;
  const countHere = (userId: number, delta: 1 | -1) => {
    const count = (sockets.get(userId) ?? 0) + delta;
    if (count > 0) sockets.set(userId, count);
    else sockets.delete(userId);
    changes++;
    return count;
  };
  const stale = () => rewriting !== undefined || missed !== written;
  /** Puts the memory counts back into Redis; rejects while Redis is away. */
  const rewrite = (): Promise<number> =>
    (rewriting ??= (async () => {
      const [at, included] = [missed, changes];
      const fields = [...sockets].flatMap(([userId, n]) => [String(userId), String(n)]);
      try {
        await redis.eval(rewriteScript, 2, instanceKey, instancesKey, String(ttlMs), instanceId, ...fields);
        written = at;
        return included;
      } finally {
        rewriting = undefined;
      }
    })());
  /** The user's count over every live instance once `delta` is applied; undefined when Redis did not answer. */
  const count = async (userId: number, delta: 1 | -1): Promise<number | undefined> => {
    const change = changes;
    const total = (d: number) =>
      redis.eval(countScript, 2, instanceKey, instancesKey, String(userId), String(d), prefix, String(ttlMs), instanceId).then(Number);
    try {
      // A rewrite whose snapshot has this change already counts it: only the total is read then.
      if (stale() && (await rewrite()) >= change) return await total(0);
      return await total(delta);
    } catch {
      failed();
      return undefined;
    }
  };
  const beat = () => {
    if (stale()) return void rewrite().catch(() => undefined);
    // A missed beat may let the hash expire: rewritten once Redis answers.
    void redis.pexpire(instanceKey, ttlMs).catch(failed);
  };
  const heartbeat = setInterval(beat, Math.max(50, Math.floor(ttlMs / 3)));
  heartbeat.unref();
  const reconnected = () => void (stale() ? rewrite().catch(() => undefined) : undefined);
  redis.on("ready", reconnected);
  return {
    async connected(userId) {
      const here = countHere(userId, 1);
      const total = await count(userId, 1);
      return (total ?? here) === 1;
    },
    async disconnected(userId) {
      const here = countHere(userId, -1);
      const total = await count(userId, -1);
      return (total ?? here) <= 0;
    },
    async online() {
      try {
        if (stale()) await rewrite();
        const ids = (await redis.eval(onlineScript, 1, instancesKey, prefix)) as string[];
        return ascending(ids.map(Number));
      } catch {
        return ascending([...sockets.keys()]);
      }
    },
    close() {
      clearInterval(heartbeat);
      redis.off("ready", reconnected);
    },
  };
}

const ascending = (ids: number[]) => ids.sort((a, b) => a - b);
