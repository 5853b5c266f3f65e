import { AppError } from "./errors.ts";

export type Role = "user" | "moderator" | "admin";

const rank: Record<Role, number> = { user: 0, moderator: 1, admin: 2 };

/** Who may do what (api.md §7). Every authorization decision in the service is made here. */
const minimumRole = {
  "users.setRole": "admin",
  "users.ban": "moderator",
  "audit.read": "admin",
  /** Adding members to a private channel one did not create (its creator always may). */
  "channels.invite": "moderator",
  /** Deleting any message, wherever it is (authors always delete their own); audited. */
  "messages.deleteAny": "moderator",
  /** Reading what moderation flagged (GET /api/admin/flags, api.md §10). */
  "moderation.flags": "moderator",
} as const satisfies Record<string, Role>;

export type Permission = keyof typeof minimumRole;

/**
 * Throws FORBIDDEN unless `actor` may exercise `permission` (on `target`, when the act
 * has one): nobody acts on their own account, and nobody bans above their own rank
 * (so a moderator cannot ban an admin).
 */
export function authorize(actor: { id: number; role: Role }, permission: Permission, target?: { id: number; role: Role }): void {
  if (!hasRole(actor, permission)) {
    throw new AppError("FORBIDDEN", `This needs the ${minimumRole[permission]} role`);
  }
  if (!target) return;
  if (target.id === actor.id) throw new AppError("FORBIDDEN", "You cannot do this to your own account");
  if (permission === "users.ban" && rank[target.role] > rank[actor.role]) {
    throw new AppError("FORBIDDEN", `A ${actor.role} cannot ban or unban an ${target.role}`);
  }
}

/** Whether `actor`'s role reaches the one `permission` needs. */
export function hasRole(actor: { role: Role }, permission: Permission): boolean {
  return rank[actor.role] >= rank[minimumRole[permission]];
}
