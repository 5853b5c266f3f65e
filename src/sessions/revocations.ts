import type { AccessGuard } from "./access-guard.ts";

/** How live connections are cut when access ends (implemented by the realtime layer). */
export interface Disconnector {
  sessions(sessionIds: string[]): void;
  user(userId: number): void;
}

/**
 * The one way a change of access is announced: ended sessions, bans and role changes
 * go through here, which drops cached access state and disconnects live sockets.
 * With several instances (§9) `peers` carries the change to the others' caches; the socket
 * disconnects already reach every instance through the Socket.IO adapter.
 */
export function createRevocations({ guard, disconnect, peers }: { guard: AccessGuard; disconnect: Disconnector; peers?: PeerNotifier }) {
  return {
    sessionsEnded(sessionIds: string[]): void {
      if (sessionIds.length === 0) return;
      for (const id of sessionIds) guard.forgetSession(id);
      peers?.({ sessionIds });
      disconnect.sessions(sessionIds);
    },
    userChanged(userId: number, { disconnect: cut }: { disconnect: boolean }): void {
      guard.forgetUser(userId);
      peers?.({ userId });
      if (cut) disconnect.user(userId);
    },
  };
}

/** Tells the other instances to drop their cached access state too (api.md §9). */
export type PeerNotifier = (change: { sessionIds?: string[]; userId?: number }) => void;

/** Applies another instance's revocation to this instance's cache. */
export function forgetRevoked(guard: AccessGuard, change: { sessionIds?: string[]; userId?: number }): void {
  for (const id of change.sessionIds ?? []) guard.forgetSession(id);
  if (change.userId !== undefined) guard.forgetUser(change.userId);
}

export type Revocations = ReturnType<typeof createRevocations>;
