import type { AuditService } from "../audit/audit.service.ts";
import type { Config } from "../config.ts";
import type { Prisma, User } from "../generated/prisma/client.ts";
import type { Db } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { hashRefreshToken, newRefreshToken } from "../lib/tokens.ts";
import type { Revocations } from "./revocations.ts";

export type RevokeReason = "logout" | "logout-all" | "refresh-reuse" | "ban" | "password-change";

export type SessionsService = ReturnType<typeof createSessionsService>;

/** The pool or an interactive transaction. */
type Writer = Pick<Db, "session">;

/**
 * Sessions are refresh-token families (OAuth 2.0 security BCP): every refresh spends the
 * presented token and issues the next; a spent token presented again means it was
 * copied, and the whole family is revoked.
 */
export function createSessionsService(deps: {
  db: Db;
  config: Pick<Config, "REFRESH_TOKEN_TTL">;
  revocations: Revocations;
  audit: AuditService;
}) {
  const { db, config, revocations, audit } = deps;
  const expiry = () => new Date(Date.now() + config.REFRESH_TOKEN_TTL * 1000);

  function nextToken() {
    const refreshToken = newRefreshToken();
    return { refreshToken, tokenHash: hashRefreshToken(refreshToken) };
  }

  /** Marks the live sessions `where` picks as revoked, through `writer` (a transaction, or the pool); returns their ids. */
  async function endWhere(where: Prisma.SessionWhereInput, reason: RevokeReason, writer: Writer = db): Promise<string[]> {
    const active = await writer.session.findMany({ where: { ...where, revokedAt: null }, select: { id: true } });
    const ids = active.map((s) => s.id);
    if (ids.length > 0) {
      await writer.session.updateMany({ where: { id: { in: ids }, revokedAt: null }, data: { revokedAt: new Date(), revokedReason: reason } });
    }
    return ids;
  }

  async function revokeWhere(where: Prisma.SessionWhereInput, reason: RevokeReason): Promise<string[]> {
    const ids = await endWhere(where, reason);
    revocations.sessionsEnded(ids);
    return ids;
  }

  return {
    /**
     * A new session with its first refresh token, as nested-create data so the caller can
     * write it in the same statement as the account (registration) or on its own (login).
     */
    newSession() {
      const { refreshToken, tokenHash } = nextToken();
      const id = crypto.randomUUID();
      return { id, refreshToken, create: { id, expiresAt: expiry(), refreshTokens: { create: { tokenHash } } } };
    },

    /** Spends `refreshToken` and returns the next one, or refuses (and kills the family on reuse). */
    async rotate(refreshToken: string, ip: string): Promise<{ user: User; sessionId: string; refreshToken: string }> {
      const presented = await db.refreshToken.findUnique({
        where: { tokenHash: hashRefreshToken(refreshToken) },
        include: { session: { include: { user: true } } },
      });
      if (!presented) throw new AppError("UNAUTHORIZED", "Unknown refresh token");
      const { session } = presented;

      const reuse = async () => {
        await revokeWhere({ id: session.id }, "refresh-reuse");
        await audit.record({ actorId: session.userId, action: "refresh_reuse", targetType: "session", targetId: session.id, ip });
        return new AppError("UNAUTHORIZED", "This refresh token was already used; the session is revoked, sign in again");
      };
      if (presented.spentAt) throw await reuse();
      // Before the revoked check: a ban revokes every session, so otherwise BANNED could never be answered.
      if (session.user.bannedAt) throw new AppError("BANNED", "This account is banned");
      if (session.revokedAt || session.expiresAt.getTime() <= Date.now()) throw new AppError("UNAUTHORIZED", "This session has ended; sign in again");

      const next = nextToken();
      // Spend and replace in one transaction; of two concurrent refreshes with one token, one wins
      // and the other is, by definition, a reuse.
      const won = await db.$transaction(async (tx) => {
        const spent = await tx.refreshToken.updateMany({ where: { id: presented.id, spentAt: null }, data: { spentAt: new Date() } });
        if (spent.count === 0) return false;
        await tx.refreshToken.create({ data: { sessionId: session.id, tokenHash: next.tokenHash } });
        await tx.session.update({ where: { id: session.id }, data: { expiresAt: expiry() } });
        return true;
      });
      if (!won) throw await reuse();
      return { user: session.user, sessionId: session.id, refreshToken: next.refreshToken };
    },

    /**
     * Revokes the session `refreshToken` belongs to (spent or not). Returns it only if this
     * call ended it: unknown tokens and sessions already over change nothing.
     */
    async revokeByToken(refreshToken: string): Promise<{ userId: number; sessionId: string } | undefined> {
      const token = await db.refreshToken.findUnique({
        where: { tokenHash: hashRefreshToken(refreshToken) },
        select: { session: { select: { id: true, userId: true } } },
      });
      if (!token) return undefined;
      const ended = await revokeWhere({ id: token.session.id }, "logout");
      return ended.length > 0 ? { userId: token.session.userId, sessionId: token.session.id } : undefined;
    },

    /** Revokes every live session of a user; returns their ids. */
    revokeAllOf(userId: number, reason: RevokeReason): Promise<string[]> {
      return revokeWhere({ userId }, reason);
    },

    /**
     * Marks every live session of a user but `keepSessionId` revoked, inside the caller's
     * transaction; returns their ids for `announceEnded` once it has committed. Announced earlier,
     * a dropped cache entry could be refilled from the rows not yet committed and keep an ended
     * session alive for the cache's lifetime.
     */
    endOthersOf(userId: number, keepSessionId: string, reason: RevokeReason, tx: Writer): Promise<string[]> {
      return endWhere({ userId, id: { not: keepSessionId } }, reason, tx);
    },

    /** Drops the ended sessions' cached access and cuts their sockets (see `endOthersOf`). */
    announceEnded(sessionIds: string[]): void {
      revocations.sessionsEnded(sessionIds);
    },
  };
}
