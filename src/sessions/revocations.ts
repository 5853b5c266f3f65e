import type { AccessGuard } from "./access-guard.ts";

/** How live connections are cut when access ends (implemented by the realtime layer). */
export interface Disconnector {
  sessions(sessionIds: string[]): void;
  user(userId: number): void;
}

/**
 * The one way a change of access is announced: ended sessions, bans and role changes
 * go through here, which drops cached access state and disconnects live sockets.
 * Several instances (§9) plug their shared channel in here, and nowhere else.
 */
export function createRevocations({ guard, disconnect }: { guard: AccessGuard; disconnect: Disconnector }) {
  return {
    sessionsEnded(sessionIds: string[]): void {
      if (sessionIds.length === 0) return;
      for (const id of sessionIds) guard.forgetSession(id);
      disconnect.sessions(sessionIds);
    },
    userChanged(userId: number, { disconnect: cut }: { disconnect: boolean }): void {
      guard.forgetUser(userId);
      if (cut) disconnect.user(userId);
    },
  };
}

export type Revocations = ReturnType<typeof createRevocations>;
