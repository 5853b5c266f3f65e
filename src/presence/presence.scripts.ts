/**
 * Presence in Redis (api.md §9): the key layout and the Lua scripts over it. Each script runs
 * atomically, so counts summed in one are never half-updated by another instance.
 *
 * Under REDIS_KEY_PREFIX, for each instance `<id>`:
 * - `presence:instances`: a set of the ids whose counts count (live ones, and dead ones not swept yet);
 * - `presence:alive:<id>`: the liveness key, PX the instance TTL, renewed by every heartbeat
 *   (a third of the TTL): an instance is dead once it has expired;
 * - `presence:instance:<id>`: a hash userId → sockets on that instance, PX twice the TTL. It outlives
 *   the liveness key on purpose: when an instance dies without closing its sockets (SIGKILL), a
 *   survivor still reads whom it counted and can announce them offline. (With one key for both, as
 *   before issue 16, the counts expired with the instance and nobody could say who went offline.)
 * - `presence:swept:<id>`: set when a survivor swept `<id>` while it counted users, so that if `<id>`
 *   was alive after all (a stalled event loop, a partition from Redis) it announces its users online
 *   again when it writes its counts back.
 *
 * A dead instance's counts keep counting until a survivor's heartbeat sweeps them: the sweep is the
 * one moment its users leave `GET /api/presence` and are announced offline, so a user whose last
 * other socket closes in between is not announced twice. The sweep deletes the counts and drops the
 * id in the same script that decides who went offline; that is the claim: a second survivor's sweep
 * runs after it and finds nothing left, so each offline is announced once across the survivors.
 *
 * Keys built inside a script are not prefixed by ioredis: the prefix is passed as an argument.
 */

/** KEYS: own counts, instances, own liveness. ARGV: userId, delta, prefix, ttl, id, counts TTL. */
export const countScript = `
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
local total = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local c = redis.call('HGET', ARGV[3] .. 'presence:instance:' .. id, ARGV[1])
  if c then total = total + tonumber(c) end
end
return total`;

/** KEYS: instances. ARGV: prefix. The users with a socket on any instance that counts. */
export const onlineScript = `
local online = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fields = redis.call('HGETALL', ARGV[1] .. 'presence:instance:' .. id)
  for i = 1, #fields, 2 do
    if tonumber(fields[i + 1]) > 0 then online[fields[i]] = true end
  end
end
local ids = {}
for id in pairs(online) do table.insert(ids, id) end
return ids`;

/**
 * The heartbeat. KEYS: own liveness, own counts, instances. ARGV: prefix, id, ttl, counts TTL,
 * swept-marker TTL. Nil when this instance's liveness had lapsed (it must write its counts back);
 * else renews it and sweeps every dead instance, returning the users that no live instance counts.
 */
export const beatScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[2])
local live, dead = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('EXISTS', ARGV[1] .. 'presence:alive:' .. id) == 1 then table.insert(live, id) else table.insert(dead, id) end
end
local offline, seen = {}, {}
for _, id in ipairs(dead) do
  local key = ARGV[1] .. 'presence:instance:' .. id
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local user = fields[i]
    if not seen[user] and tonumber(fields[i + 1]) > 0 then
      seen[user] = true
      local total = 0
      for _, other in ipairs(live) do
        local c = redis.call('HGET', ARGV[1] .. 'presence:instance:' .. other, user)
        if c then total = total + tonumber(c) end
      end
      if total <= 0 then table.insert(offline, user) end
    end
  end
  if #fields > 0 then redis.call('SET', ARGV[1] .. 'presence:swept:' .. id, '1', 'PX', ARGV[5]) end
  redis.call('DEL', key)
  redis.call('SREM', KEYS[3], id)
end
return offline`;

/**
 * Rewrites the instance's counts from its memory (after Redis missed some, or after it was taken
 * for dead). KEYS: own counts, instances, own liveness, own swept marker. ARGV: ttl, counts TTL,
 * id, prefix, then userId, count pairs. Returns, when this instance had been swept, its users
 * that no other instance counts: the sweep announced them offline, and they are online here.
 */
export const rewriteScript = `
redis.call('DEL', KEYS[1])
local back = {}
if redis.call('DEL', KEYS[4]) == 1 then
  local others = redis.call('SMEMBERS', KEYS[2])
  for i = 5, #ARGV, 2 do
    local total = 0
    for _, id in ipairs(others) do
      local c = redis.call('HGET', ARGV[4] .. 'presence:instance:' .. id, ARGV[i])
      if c then total = total + tonumber(c) end
    end
    if total <= 0 then table.insert(back, ARGV[i]) end
  end
end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
return back`;

/** The keys of one instance (ioredis adds the prefix to these, passed as KEYS). */
export function instanceKeys(instanceId: string) {
  return {
    instances: "presence:instances",
    alive: `presence:alive:${instanceId}`,
    counts: `presence:instance:${instanceId}`,
    swept: `presence:swept:${instanceId}`,
  };
}
