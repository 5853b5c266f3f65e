import type { Db } from "../lib/db.ts";

/**
 * Presence across a graceful restart of a single instance (presence.socket.ts): the users online
 * at the stop, each with the end of their grace, kept in PostgreSQL for the next process.
 */
export interface PresenceHandoff {
  /** Replaces whatever an earlier stop left with `users` (user id → end of grace, epoch ms). */
  save(users: Map<number, number>): Promise<void>;
  /** Reads and empties the table: user id → end of grace (epoch ms). */
  take(): Promise<Map<number, number>>;
}

export function presenceHandoff(db: Db): PresenceHandoff {
  return {
    async save(users) {
      await db.$transaction([
        db.presenceHandoff.deleteMany(),
        // A user deleted meanwhile has no row to point at: skipped by the foreign key's join.
        db.$executeRaw`INSERT INTO presence_handoffs (user_id, until)
                       SELECT u.id, h.until FROM unnest(${[...users.keys()]}::int[], ${[...users.values()].map((ms) => new Date(ms))}::timestamptz[]) AS h(user_id, until)
                       JOIN users u ON u.id = h.user_id`,
      ]);
    },
    async take() {
      const rows = await db.$queryRaw<{ user_id: number; until: Date }[]>`DELETE FROM presence_handoffs RETURNING user_id, until`;
      return new Map(rows.map((row) => [row.user_id, row.until.getTime()]));
    },
  };
}
