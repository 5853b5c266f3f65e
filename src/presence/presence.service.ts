import type { RedisClient } from "../lib/redis.ts";
import { beatScript, countScript, instanceKeys, onlineScript, rewriteScript } from "./presence.scripts.ts";

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
  /** Whether the user has a socket counted anywhere (with Redis: on any live instance). */
  isOnline(userId: number): Promise<boolean>;
  /** Stops this instance's heartbeat (with Redis): unless its sockets closed first, its users are then announced offline by another instance. */
  close(): void;
}

/** How long an instance counts after its last heartbeat (a beat every third of it): PRESENCE_INSTANCE_TTL_MS. */
const INSTANCE_TTL_MS = 30_000;
/**
 * How long a swept instance's marker is kept: if it comes back within this (it was stalled or cut
 * off from Redis, not dead), it announces its users online again; after it, they stay announced
 * offline until they reconnect (`GET /api/presence` lists them again either way).
 */
const SWEPT_MARKER_MS = 24 * 60 * 60 * 1000;

export interface PresenceOptions {
  /** How long an instance's users count after its last heartbeat; offline follows within 4/3 of it. */
  instanceTtlMs?: number;
  /**
   * Presence changes no socket event of this instance caused, to announce to every socket (with
   * Redis only): "offline" for the users of an instance whose heartbeat lapsed (it crashed) that
   * no live instance counts, announced by one survivor; "online" for this instance's users when it
   * writes its counts back after having been taken for dead. Ids ascending, never empty.
   */
  onLapse?: (userIds: number[], status: "online" | "offline") => void;
}

export function createPresence(redis?: RedisClient, { instanceTtlMs = INSTANCE_TTL_MS, onLapse = () => {} }: PresenceOptions = {}): Presence {
  return redis ? redisPresence(redis, instanceTtlMs, onLapse) : memoryPresence();
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
    async isOnline(userId) {
      return sockets.has(userId);
    },
    close() {},
  };
}

// Each instance counts its sockets per user in a hash of its own, and its heartbeat keeps a
// liveness key of its own alive; a survivor's heartbeat sweeps a dead instance's counts and
// announces its users offline (presence.scripts.ts has the keys and why). The scripts sum a
// user's counts over the instances atomically, so exactly one socket sees a user's first
// connection and one their last, wherever they are.
//
// While Redis is away (api.md §9), presence falls back to this instance's own sockets, which it
// counts in memory as well: a user's first socket here and their last one here are announced
// (to this instance's clients: broadcasts do not leave it meanwhile) and `online()` lists the
// users connected here. Counts Redis missed are written back, from the memory ones, as soon as
// it answers again (on reconnection, at the next heartbeat or the next count, whichever first).
function redisPresence(redis: RedisClient, ttlMs: number, onLapse: NonNullable<PresenceOptions["onLapse"]>): Presence {
  const instanceId = crypto.randomUUID();
  const prefix = redis.options.keyPrefix ?? "";
  const keys = instanceKeys(instanceId);
  const [ttl, countsTtl] = [String(ttlMs), String(2 * ttlMs)];
  const sockets = new Map<number, number>();
  // Bumped by every failed write: while above `written`, the hash in Redis is not to be trusted.
  // From 1: this instance is not in Redis yet (its first beat, count or reconnection writes it in).
  let missed = 1;
  let written = 0;
  // Bumped by every count here; a rewrite resolves with the value its snapshot included.
  let changes = 0;
  let rewriting: Promise<{ included: number; restored: Set<number> }> | undefined;

  const failed = () => void missed++;
  // The callback's own failure must not be taken for Redis's: it surfaces as an unhandled
  // rejection (index.ts logs those) while the counts go on.
  const tell = (ids: number[], status: "online" | "offline") => {
    if (ids.length === 0) return;
    try {
      onLapse(ascending(ids), status);
    } catch (error) {
      void Promise.reject(error);
    }
  };
  const countHere = (userId: number, delta: 1 | -1) => {
    const count = (sockets.get(userId) ?? 0) + delta;
    if (count > 0) sockets.set(userId, count);
    else sockets.delete(userId);
    changes++;
    return count;
  };
  const stale = () => rewriting !== undefined || missed !== written;
  /** Puts the memory counts back into Redis (announcing them online if it was swept); rejects while Redis is away. */
  const rewrite = () =>
    (rewriting ??= (async () => {
      const [at, included] = [missed, changes];
      const fields = [...sockets].flatMap(([userId, n]) => [String(userId), String(n)]);
      try {
        const back = (await redis.eval(rewriteScript, 4, keys.counts, keys.instances, keys.alive, keys.swept, ttl, countsTtl, instanceId, prefix, ...fields)) as string[];
        written = at;
        const restored = new Set(back.map(Number));
        tell([...restored], "online");
        return { included, restored };
      } finally {
        rewriting = undefined;
      }
    })());
  /**
   * The user's count over every instance that counts once `delta` is applied, and whether a
   * rewrite on the way announced them online already; undefined when Redis did not answer.
   */
  const count = async (userId: number, delta: 1 | -1 | 0): Promise<{ total: number; announced: boolean } | undefined> => {
    const change = changes;
    const total = async (d: number) => {
      const n = Number(await redis.eval(countScript, 3, keys.counts, keys.instances, keys.alive, String(userId), String(d), prefix, ttl, instanceId, countsTtl));
      // This instance's liveness lapsed (it may have been swept): its counts are written back first.
      if (n < 0) throw lapsed;
      return n;
    };
    try {
      if (!stale()) {
        try {
          return { total: await total(delta), announced: false };
        } catch (error) {
          if (error !== lapsed) throw error;
          failed();
        }
      }
      // A rewrite whose snapshot has this change already counts it: only the total is read then.
      const rewritten = await rewrite();
      if (rewritten.included >= change) return { total: await total(0), announced: rewritten.restored.has(userId) };
      return { total: await total(delta), announced: false };
    } catch {
      failed();
      return undefined;
    }
  };
  const beat = () => {
    if (stale()) return void rewrite().catch(() => undefined);
    // A missed beat may let this instance lapse: its counts are rewritten once Redis answers.
    redis.eval(beatScript, 3, keys.alive, keys.counts, keys.instances, prefix, instanceId, ttl, countsTtl, String(SWEPT_MARKER_MS)).then(
      (offline) => {
        // Taken for dead (a stall, a partition): written back in, and announced online again if swept.
        if (offline === null) {
          failed();
          return beat();
        }
        tell((offline as string[]).map(Number), "offline");
      },
      failed,
    );
  };
  const heartbeat = setInterval(beat, Math.max(50, Math.floor(ttlMs / 3)));
  heartbeat.unref();
  beat();
  const reconnected = () => void (stale() ? rewrite().catch(() => undefined) : undefined);
  redis.on("ready", reconnected);
  return {
    async connected(userId) {
      const here = countHere(userId, 1);
      const counted = await count(userId, 1);
      return counted ? counted.total === 1 && !counted.announced : here === 1;
    },
    async disconnected(userId) {
      const here = countHere(userId, -1);
      const counted = await count(userId, -1);
      return (counted?.total ?? here) <= 0;
    },
    async online() {
      try {
        if (stale()) await rewrite();
        const ids = (await redis.eval(onlineScript, 1, keys.instances, prefix)) as string[];
        return ascending(ids.map(Number));
      } catch {
        return ascending([...sockets.keys()]);
      }
    },
    async isOnline(userId) {
      const counted = await count(userId, 0);
      return counted ? counted.total > 0 : sockets.has(userId);
    },
    close() {
      clearInterval(heartbeat);
      redis.off("ready", reconnected);
    },
  };
}

/** Thrown (and caught) inside `count` when this instance's liveness key had lapsed. */
const lapsed = new Error("presence: this instance's heartbeat lapsed");

const ascending = (ids: number[]) => ids.sort((a, b) => a - b);
