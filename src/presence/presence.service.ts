/**
 * Who is online, counted per user rather than per socket (api.md §8): a user is online from
 * their first socket's connection until their last one closes, however many tabs they have.
 *
 * The count lives in this process. With several instances (api.md §9) it needs a shared
 * store; this module is the one place to change.
 */
export type Presence = ReturnType<typeof createPresence>;

export function createPresence() {
  const sockets = new Map<number, number>();
  return {
    /** Counts a socket in; true when it is the user's first (they just came online). */
    connected(userId: number): boolean {
      const count = (sockets.get(userId) ?? 0) + 1;
      sockets.set(userId, count);
      return count === 1;
    },

    /** Counts a socket out; true when it was the user's last (they just went offline). */
    disconnected(userId: number): boolean {
      const count = (sockets.get(userId) ?? 0) - 1;
      if (count > 0) {
        sockets.set(userId, count);
        return false;
      }
      sockets.delete(userId);
      return true;
    },

    /** The ids of online users, ascending. */
    online(): number[] {
      return [...sockets.keys()].sort((a, b) => a - b);
    },
  };
}
