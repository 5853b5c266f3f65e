import type { AuditService } from "../audit/audit.service.ts";
import type { Db } from "../lib/db.ts";
import type { Role } from "../lib/policy.ts";
import { usernameKey } from "./users.schemas.ts";

/**
 * Gives the named accounts `role`, outside any request: ADMIN_USERNAMES at start-up and
 * `bun run user:role`. Each change is audited with no actor and `via` saying where it
 * came from. Returns the accounts that changed (names not found are skipped). A name matches
 * its account exactly (after NFC), not another case or a look-alike of it (api.md §7 "Roles").
 */
export async function grantRole(
  deps: { db: Db; audit: AuditService },
  usernames: string[],
  role: Role,
  via: string,
): Promise<{ id: number; username: string; from: Role }[]> {
  const { db, audit } = deps;
  const exact = new Set(usernames.map((name) => name.normalize("NFC")));
  // Looked up by the indexed key; then only the exact spellings count.
  const candidates = await db.user.findMany({ where: { usernameKey: { in: [...exact].map(usernameKey) }, role: { not: role } } });
  const changing = candidates.filter((user) => exact.has(user.username));
  for (const user of changing) {
    await db.$transaction(async (tx) => {
      await tx.user.update({ where: { id: user.id }, data: { role } });
      await audit.record({ actorId: null, action: "role_change", targetType: "user", targetId: user.id, meta: { from: user.role, to: role, via } }, tx);
    });
  }
  return changing.map((u) => ({ id: u.id, username: u.username, from: u.role }));
}
