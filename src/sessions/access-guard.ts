import DataLoader from "dataloader";
import { batchedLoads } from "../lib/batched-loads.ts";
import { poolOf, type Db } from "../lib/db.ts";
import type { Role } from "../lib/policy.ts";

/** What an access token's session and user are worth right now. */
export interface AccessState {
  userId: number;
  role: Role;
  banned: boolean;
  /** Revoked, expired, or not this user's session. */
  revoked: boolean;
}

/**
 * The hot-path check behind every authenticated request and socket: is this session
 * still alive, is its user banned, what is the user's current role? Answers come from
 * memory; a miss costs one query, shared by every check of that session made while it runs
 * (a socket's burst of events must not become a burst of lookups), and by the misses of other
 * sessions started in the same tick (a reconnect storm's handshakes: one query for hundreds). Revocation, bans and role
 * changes call `forget*` (through `Revocations`), so a change is seen at once; `ttlMs` bounds
 * how stale an entry can be if an invalidation from another instance were ever lost.
 */
export function createAccessGuard({ db, ttlMs = 30_000 }: { db: Db; ttlMs?: number }) {
  const cache = new Map<string, { state: AccessState; expires: number }>();
  const sessionsOfUser = new Map<number, Set<string>>();
  // Bumped by every `forget*`. A load that was in flight across a forget may have read the row
  // before the change committed; it answers its own request but is not cached, or the stale
  // state would outlive the invalidation (up to `ttlMs`).
  let generation = 0;
  // Lookups in flight, by session, with the generation they started in: a check joins one only
  // if nothing was forgotten since (else it could get the state from before the change).
  const loading = new Map<string, { userId: number; generation: number; state: Promise<AccessState> }>();

  // No cache of its own (the one above is the cache): it only gathers the misses of one tick into
  // one statement, prepared once per connection and sent to node-postgres directly (through Prisma,
  // each call would first compile its query, the larger part of a handshake's CPU).
  const pool = poolOf(db);
  const sessions = new DataLoader(
    async (ids: readonly string[]) => {
      const { rows } = await pool.query<{ id: string; user_id: number; revoked_at: Date | null; expires_at: Date; role: Role; banned_at: Date | null }>({
        name: "access-guard-sessions",
        text: `SELECT s.id::text, s.user_id, s.revoked_at, s.expires_at, u.role::text AS role, u.banned_at
                 FROM sessions s JOIN users u ON u.id = s.user_id
                WHERE s.id = ANY($1::uuid[])`,
        values: [ids],
      });
      const byId = new Map(rows.map((row) => [row.id, row]));
      return ids.map((id) => byId.get(id));
    },
    batchedLoads(),
  );

  async function load(sessionId: string, userId: number): Promise<AccessState> {
    // Not a session id at all (ids are lowercase UUIDs): no query, which one bad id would fail for the whole batch.
    const row = uuid.test(sessionId) ? await sessions.load(sessionId) : undefined;
    if (!row || row.user_id !== userId) return { userId, role: "user", banned: false, revoked: true };
    return {
      userId,
      role: row.role,
      banned: row.banned_at !== null,
      revoked: row.revoked_at !== null || row.expires_at.getTime() <= Date.now(),
    };
  }

  function forgetSession(sessionId: string): void {
    generation++;
    const entry = cache.get(sessionId);
    cache.delete(sessionId);
    if (entry) sessionsOfUser.get(entry.state.userId)?.delete(sessionId);
  }

  return {
    async check(sessionId: string, userId: number): Promise<AccessState> {
      const hit = cache.get(sessionId);
      if (hit && hit.expires > Date.now() && hit.state.userId === userId) return hit.state;
      const pending = loading.get(sessionId);
      if (pending && pending.userId === userId && pending.generation === generation) return pending.state;
      const started = generation;
      const entry = {
        userId,
        generation: started,
        state: load(sessionId, userId).then((state) => {
          if (generation !== started) return state;
          cache.set(sessionId, { state, expires: Date.now() + ttlMs });
          let sessions = sessionsOfUser.get(userId);
          if (!sessions) sessionsOfUser.set(userId, (sessions = new Set()));
          sessions.add(sessionId);
          return state;
        }),
      };
      loading.set(sessionId, entry);
      const settled = () => {
        if (loading.get(sessionId) === entry) loading.delete(sessionId);
      };
      entry.state.then(settled, settled);
      return entry.state;
    },
    forgetSession,
    forgetUser(userId: number): void {
      generation++;
      for (const sessionId of sessionsOfUser.get(userId) ?? []) cache.delete(sessionId);
      sessionsOfUser.delete(userId);
    },
  };
}

export type AccessGuard = ReturnType<typeof createAccessGuard>;

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
