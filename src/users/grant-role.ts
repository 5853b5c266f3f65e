import type { AuditService } from "../audit/audit.service.ts";
import type { Db } from "../lib/db.ts";
import type { Role } from "../lib/policy.ts";
import { usernameKey } from "./users.schemas.ts";

/**
 * Gives the named accounts `role`, outside any request: ADMIN_USERNAMES at start-up and
 * `bun run user:role`. Each change is audited with no actor and `via` saying where it
 * came from. Returns the accounts that changed (names not found are skipped).
 */
export async function grantRole(
  deps: { db: Db; audit: AuditService },
  usernames: string[],
  role: Role,
  via: string,
): Promise<{ id: number; username: string; from: Role }[]> {
  const { db, audit } = deps;
  const changing = await db.user.findMany({ where: { usernameKey: { in: usernames.map(usernameKey) }, role: { not: role } } });
  for (const user of changing) {
    await db.$transaction(async (tx) => {
      await tx.user.update({ where: { id: user.id }, data: { role } });
      await audit.record({ actorId: null, action: "role_change", targetType: "user", targetId: user.id, meta: { from: user.role, to: role, via } }, tx);
    });
  }
  return changing.map((u) => ({ id: u.id, username: u.username, from: u.role }));
}
