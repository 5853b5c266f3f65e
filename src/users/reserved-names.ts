import type { AuditService } from "../audit/audit.service.ts";
import type { Db } from "../lib/db.ts";
import type { Logger } from "../lib/logger.ts";
import { nameSkeleton } from "../lib/names.ts";
import { grantRole } from "./grant-role.ts";
import { usernameKey } from "./users.schemas.ts";

/**
 * ADMIN_USERNAMES as reserved names (api.md §7 "Roles"): each is for exactly that name (trimmed,
 * NFC). Another case of it or a look-alike (same folded key or confusable skeleton) is neither
 * registered nor promoted: whoever got it first would be admin, and the real one locked out.
 */
export function reservedNames(listed: string[]) {
  const entries = listed.map((entry) => {
    const name = entry.trim().normalize("NFC");
    return { name, key: usernameKey(name), skeleton: nameSkeleton(name) };
  });
  return {
    names: entries.map((e) => e.name),
    keys: entries.map((e) => e.key),
    skeletons: entries.map((e) => e.skeleton),
    /** The listed name `username` is (`exact`) or resembles; undefined when it is none of them. */
    match(username: string, key = usernameKey(username), skeleton = nameSkeleton(username)): { listed: string; exact: boolean } | undefined {
      const exact = entries.find((e) => e.name === username);
      if (exact) return { listed: exact.name, exact: true };
      const like = entries.find((e) => e.key === key || e.skeleton === skeleton);
      return like && { listed: like.name, exact: false };
    },
  };
}

/**
 * At start-up: the accounts named exactly in ADMIN_USERNAMES become admins (audited by grantRole).
 * An account that only resembles a listed name, registered before names were reserved, is left as
 * it is and logged, for an operator to look at (it also keeps the real name from registering).
 */
export async function promoteListedAdmins(deps: { db: Db; audit: AuditService; logger: Logger }, listed: string[]): Promise<void> {
  const { db, logger } = deps;
  const reserved = reservedNames(listed);
  const promoted = await grantRole(deps, reserved.names, "admin", "ADMIN_USERNAMES");
  if (promoted.length > 0) logger.info({ admins: promoted.map((u) => u.username) }, "granted admin from ADMIN_USERNAMES");
  const alike = await db.user.findMany({
    where: { OR: [{ usernameKey: { in: reserved.keys } }, { nameSkeleton: { in: reserved.skeletons } }], username: { notIn: reserved.names } },
    select: { id: true, username: true, role: true },
  });
  for (const user of alike) {
    const match = reserved.match(user.username);
    logger.warn(
      { listed: match?.listed, account: user.username, userId: user.id, role: user.role },
      "ADMIN_USERNAMES: an account looks like a listed name but is not it; not promoted",
    );
  }
}
