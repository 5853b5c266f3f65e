import type { AuditService } from "../audit/audit.service.ts";
import type { Config } from "../config.ts";
import type { User } from "../generated/prisma/client.ts";
import { isUniqueViolation, type Db } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { needsRehash, prepareDummyHash, type PasswordHasher } from "../lib/password.ts";
import type { AuthUser, TokenSigner } from "../lib/tokens.ts";
import type { SessionsService } from "../sessions/sessions.service.ts";
import { nameSkeleton } from "../lib/names.ts";
import { reservedNames } from "../users/reserved-names.ts";
import { toPublicUser, usernameKey, type PublicUser } from "../users/users.schemas.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";
import type { Credentials, PasswordChange } from "./auth.schemas.ts";
import type { LoginFailures } from "./login-failures.ts";

export interface AuthResult {
  token: string;
  refreshToken: string;
  user: PublicUser;
}

export type AuthService = ReturnType<typeof createAuthService>;

const usernameTaken = () => new AppError("USERNAME_TAKEN", "That username is already taken");

export function createAuthService(deps: {
  db: Db;
  signer: TokenSigner;
  sessions: SessionsService;
  audit: AuditService;
  config: Pick<Config, "ADMIN_USERNAMES">;
  /** Every argon2id hash and verification goes through it (a bounded number at once). */
  hasher: PasswordHasher;
  /** The limits on failed password checks, login and password change alike. */
  loginFailures: LoginFailures;
  /** A new account exists (the user list's cached pages are out of date). */
  onUserCreated?: () => void;
}) {
  const { db, signer, sessions, audit, config, hasher, loginFailures, onUserCreated } = deps;
  const reserved = reservedNames(config.ADMIN_USERNAMES);
  prepareDummyHash();

  const failedCheck = (user: User | null, key: string, ip: string, via?: "password_change") =>
    audit.record({
      actorId: user?.id ?? null,
      action: "login_failed",
      targetType: user ? "user" : undefined,
      targetId: user?.id,
      ip,
      meta: via ? { username: key, via } : { username: key },
    });

  const accessToken = (user: User, sessionId: string) =>
    signer.signAccess({ id: user.id, username: user.username, role: user.role, sessionId });

  /**
   * Replaces a hash made with older parameters, unless the password changed meanwhile (the row no
   * longer holds `old`). Best effort: when the hasher is busy or the database does not answer, the
   * old hash still verifies and the next login tries again.
   */
  async function rehash(userId: number, old: string, password: string): Promise<void> {
    try {
      const passwordHash = await hasher.hash(password);
      await db.user.updateMany({ where: { id: userId, passwordHash: old }, data: { passwordHash } });
    } catch {
      // Kept as it was: see above.
    }
  }

  return {
    /** Creates the account and its first session in one statement. */
    async register({ username, password }: Credentials, ip: string): Promise<AuthResult> {
      const key = usernameKey(username);
      const skeleton = nameSkeleton(username);
      // A listed admin name, or anything that folds or looks like one, is for that exact name alone:
      // whoever registers it first becomes admin. Refused like a taken name (it is reserved).
      const listed = reserved.match(username, key, skeleton);
      if (listed !== undefined && !listed.exact) throw usernameTaken();
      const passwordHash = await hasher.hash(password);
      const session = sessions.newSession();
      // A newcomer's read marker in general starts at the newest message: unread starts at zero.
      const newest = await db.message.findFirst({ where: { channelId: GENERAL_CHANNEL_ID }, orderBy: { id: "desc" }, select: { id: true } });
      let user: User;
      try {
        user = await db.user.create({
          data: {
            username,
            usernameKey: key,
            nameSkeleton: skeleton,
            passwordHash,
            role: listed?.exact ? "admin" : "user",
            sessions: { create: session.create },
            memberships: { create: { channelId: GENERAL_CHANNEL_ID, lastReadId: newest?.id ?? 0 } },
          },
        });
      } catch (error) {
        // The unique indexes on the folded name and on the skeleton decide, so two racing registrations
        // cannot both win. One answer for both: which existing name it resembles is not told.
        if (isUniqueViolation(error, "username_key") || isUniqueViolation(error, "name_skeleton")) throw usernameTaken();
        throw error;
      }
      await audit.record({ actorId: user.id, action: "register", targetType: "user", targetId: user.id, ip, meta: { role: user.role } });
      onUserCreated?.();
      return { token: await accessToken(user, session.id), refreshToken: session.refreshToken, user: toPublicUser(user) };
    },

    /**
     * Unknown user and wrong password are indistinguishable, in answer and in time. Failures
     * are limited per (username, address) and slowed per username (login-failures.ts), so a
     * password cannot be guessed at speed, and guessing cannot lock the owner out.
     */
    async login({ username, password }: Credentials, ip: string): Promise<AuthResult> {
      const key = usernameKey(username);
      const { ok, user } = await loginFailures.check(key, ip, async () => {
        const user = await db.user.findUnique({ where: { usernameKey: key } });
        return { ok: (await hasher.verify(password, user?.passwordHash)) && user !== null, user };
      });
      if (!ok || !user) {
        await failedCheck(user, key, ip);
        throw new AppError("INVALID_CREDENTIALS", "Wrong username or password");
      }
      // Only someone who knows the password learns that the account is banned.
      if (user.bannedAt) throw new AppError("BANNED", "This account is banned");
      // A hash from before the current parameters (password.ts): redone now that the password is known.
      if (needsRehash(user.passwordHash)) await rehash(user.id, user.passwordHash, password);
      const session = sessions.newSession();
      await db.session.create({ data: { ...session.create, userId: user.id } });
      await audit.record({ actorId: user.id, action: "login", targetType: "session", targetId: session.id, ip });
      return { token: await accessToken(user, session.id), refreshToken: session.refreshToken, user: toPublicUser(user) };
    },

    /** api.md §7: rotation with reuse detection. */
    async refresh(refreshToken: string, ip: string): Promise<{ token: string; refreshToken: string }> {
      const next = await sessions.rotate(refreshToken, ip);
      return { token: await accessToken(next.user, next.sessionId), refreshToken: next.refreshToken };
    },

    /** Ends the session of `refreshToken`. Idempotent: an unknown token is not an error. */
    async logout(refreshToken: string, ip: string): Promise<void> {
      const ended = await sessions.revokeByToken(refreshToken);
      if (ended) await audit.record({ actorId: ended.userId, action: "logout", targetType: "session", targetId: ended.sessionId, ip });
    },

    /**
     * A new password for the caller, who proves the current one (a stolen access token alone is
     * not enough). A wrong current password counts as a failed login. The calling session
     * carries on; every other session ends and its sockets are cut (whoever else was signed in
     * is out), in one transaction with the new hash and the audit row.
     */
    async changePassword(caller: AuthUser, { currentPassword, newPassword }: PasswordChange, ip: string): Promise<void> {
      const user = await db.user.findUnique({ where: { id: caller.id } });
      if (!user) throw new AppError("UNAUTHORIZED", "The account for this token no longer exists");
      const { ok } = await loginFailures.check(user.usernameKey, ip, async () => ({ ok: await hasher.verify(currentPassword, user.passwordHash) }));
      if (!ok) {
        await failedCheck(user, user.usernameKey, ip, "password_change");
        throw new AppError("INVALID_CREDENTIALS", "The current password is wrong");
      }
      const passwordHash = await hasher.hash(newPassword);
      const ended = await db.$transaction(async (tx) => {
        // Only over the hash just checked: of two changes at once one wins, and the other's
        // "current" password is no longer current.
        const changed = await tx.user.updateMany({ where: { id: user.id, passwordHash: user.passwordHash }, data: { passwordHash } });
        if (changed.count === 0) return undefined;
        const ids = await sessions.endOthersOf(user.id, caller.sessionId, "password-change", tx);
        await audit.record({ actorId: user.id, action: "password_changed", targetType: "user", targetId: user.id, ip, meta: { sessions: ids.length } }, tx);
        return ids;
      });
      if (!ended) throw new AppError("INVALID_CREDENTIALS", "The current password has just been changed");
      sessions.announceEnded(ended);
    },

    /** Ends every session of the caller, this one included. */
    async logoutAll(user: AuthUser, ip: string): Promise<void> {
      const ended = await sessions.revokeAllOf(user.id, "logout-all");
      await audit.record({ actorId: user.id, action: "logout_all", targetType: "user", targetId: user.id, ip, meta: { sessions: ended.length } });
    },
  };
}
