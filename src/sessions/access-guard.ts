import type { Db } from "../lib/db.ts";
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
 * (a socket's burst of events must not become a burst of lookups). Revocation, bans and role
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

  async function load(sessionId: string, userId: number): Promise<AccessState> {
    const row = await db.session.findUnique({
      where: { id: sessionId },
      select: { userId: true, revokedAt: true, expiresAt: true, user: { select: { role: true, bannedAt: true } } },
    });
    if (!row || row.userId !== userId) return { userId, role: "user", banned: false, revoked: true };
    return {
      userId,
      role: row.user.role,
      banned: row.user.bannedAt !== null,
      revoked: row.revokedAt !== null || row.expiresAt.getTime() <= Date.now(),
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
