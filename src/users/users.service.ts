import type { AuditService } from "../audit/audit.service.ts";
import type { Db } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { authorize, type Role } from "../lib/policy.ts";
import type { AuthUser } from "../lib/tokens.ts";
import type { Revocations } from "../sessions/revocations.ts";
import type { SessionsService } from "../sessions/sessions.service.ts";
import { LRUCache } from "lru-cache";
import { pageOf, type IdPage } from "../lib/paging.ts";
import { toPublicUser, type PublicUser } from "./users.schemas.ts";

export type UsersService = ReturnType<typeof createUsersService>;

export function createUsersService(deps: { db: Db; audit: AuditService; sessions: SessionsService; revocations: Revocations }) {
  const { db, audit, sessions, revocations } = deps;
  type Page = IdPage<PublicUser>;
  // Pages of the user list, read by every client that opens: kept a second at most, and dropped
  // at once when this instance adds a user or changes a role. A change made by another instance
  // or by the CLI (scripts/user-role.ts) shows within that second. At most 100,000 users' worth.
  const pages = new LRUCache<string, Page>({ max: 1_000, maxSize: 100_000, sizeCalculation: (page) => page.items.length + 1, ttl: 1_000 });
  // Bumped by every change: a page read across a change answers its request but is not kept.
  let generation = 0;
  const forgetPages = () => {
    generation++;
    pages.clear();
  };

  async function target(id: number) {
    const user = await db.user.findUnique({ where: { id } });
    if (!user) throw new AppError("NOT_FOUND", "No such user");
    return user;
  }

  return {
    /** One page of users by id; `nextAfter` is set when more remain. */
    async list({ limit, after }: { limit: number; after?: number }): Promise<Page> {
      const key = `${limit}:${after ?? ""}`;
      const cached = pages.get(key);
      if (cached) return cached;
      const started = generation;
      const rows = await db.user.findMany({
        where: after === undefined ? {} : { id: { gt: after } },
        orderBy: { id: "asc" },
        take: limit + 1,
      });
      const { rows: users, nextAfter } = pageOf(rows, limit, (user) => user.id);
      const page = { items: users.map(toPublicUser), nextAfter };
      if (generation === started) pages.set(key, page);
      return page;
    },

    /** A user was added or a role changed: the list pages in memory are out of date. */
    forgetPages,

    async get(id: number): Promise<PublicUser> {
      const user = await db.user.findUnique({ where: { id } });
      // A valid token for an account that no longer exists is as good as no token.
      if (!user) throw new AppError("UNAUTHORIZED", "The account for this token no longer exists");
      return toPublicUser(user);
    },

    /** Admins set roles; the change and its audit row commit together and take effect at once. */
    async setRole(actor: AuthUser, id: number, role: Role, ip: string): Promise<PublicUser> {
      const before = await target(id);
      authorize(actor, "users.setRole", before);
      // Nothing to change, nothing to audit.
      if (before.role === role) return toPublicUser(before);
      const after = await db.$transaction(async (tx) => {
        const updated = await tx.user.update({ where: { id }, data: { role } });
        await audit.record({ actorId: actor.id, action: "role_change", targetType: "user", targetId: id, ip, meta: { from: before.role, to: role } }, tx);
        return updated;
      });
      revocations.userChanged(id, { disconnect: false });
      forgetPages();
      return toPublicUser(after);
    },

    /** Moderators and admins ban (not above their rank); every session ends and sockets drop at once. */
    async ban(actor: AuthUser, id: number, reason: string | undefined, ip: string): Promise<PublicUser> {
      const before = await target(id);
      authorize(actor, "users.ban", before);
      const after = await db.$transaction(async (tx) => {
        const updated = await tx.user.update({ where: { id }, data: { bannedAt: before.bannedAt ?? new Date(), banReason: reason ?? null } });
        await audit.record({ actorId: actor.id, action: "ban", targetType: "user", targetId: id, ip, meta: reason ? { reason } : {} }, tx);
        return updated;
      });
      revocations.userChanged(id, { disconnect: true });
      await sessions.revokeAllOf(id, "ban");
      return toPublicUser(after);
    },

    async unban(actor: AuthUser, id: number, ip: string): Promise<PublicUser> {
      const before = await target(id);
      authorize(actor, "users.ban", before);
      const after = await db.$transaction(async (tx) => {
        const updated = await tx.user.update({ where: { id }, data: { bannedAt: null, banReason: null } });
        await audit.record({ actorId: actor.id, action: "unban", targetType: "user", targetId: id, ip }, tx);
        return updated;
      });
      revocations.userChanged(id, { disconnect: false });
      return toPublicUser(after);
    },
  };
}
