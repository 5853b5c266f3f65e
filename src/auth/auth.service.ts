import type { AuditService } from "../audit/audit.service.ts";
import type { Config } from "../config.ts";
import type { User } from "../generated/prisma/client.ts";
import { isUniqueViolation, type Db } from "../lib/db.ts";
import { AppError } from "../lib/errors.ts";
import { prepareDummyHash, type PasswordHasher } from "../lib/password.ts";
import type { AuthUser, TokenSigner } from "../lib/tokens.ts";
import type { SessionsService } from "../sessions/sessions.service.ts";
import { toPublicUser, usernameKey, type PublicUser } from "../users/users.schemas.ts";
import { GENERAL_CHANNEL_ID } from "../channels/general.ts";
import type { Credentials } from "./auth.schemas.ts";
import type { LoginFailures } from "./login-failures.ts";

export interface AuthResult {
  token: string;
  refreshToken: string;
  user: PublicUser;
}

export type AuthService = ReturnType<typeof createAuthService>;

export function createAuthService(deps: {
  db: Db;
  signer: TokenSigner;
  sessions: SessionsService;
  audit: AuditService;
  config: Pick<Config, "ADMIN_USERNAMES">;
  /** Every argon2id hash and verification goes through it (a bounded number at once). */
  hasher: PasswordHasher;
  /** The limits on failed password checks. */
  loginFailures: LoginFailures;
  /** A new account exists (the user list's cached pages are out of date). */
  onUserCreated?: () => void;
}) {
  const { db, signer, sessions, audit, config, hasher, loginFailures, onUserCreated } = deps;
  const adminKeys = new Set(config.ADMIN_USERNAMES.map(usernameKey));
  prepareDummyHash();

  const failedCheck = (user: User | null, key: string, ip: string) =>
    audit.record({
      actorId: user?.id ?? null,
      action: "login_failed",
      targetType: user ? "user" : undefined,
      targetId: user?.id,
      ip,
      meta: { username: key },
    });

  const accessToken = (user: User, sessionId: string) =>
    signer.signAccess({ id: user.id, username: user.username, role: user.role, sessionId });

  return {
    /** Creates the account and its first session in one statement. */
    async register({ username, password }: Credentials, ip: string): Promise<AuthResult> {
      const passwordHash = await hasher.hash(password);
      const key = usernameKey(username);
      const session = sessions.newSession();
      // A newcomer's read marker in general starts at the newest message: unread starts at zero.
      const newest = await db.message.findFirst({ where: { channelId: GENERAL_CHANNEL_ID }, orderBy: { id: "desc" }, select: { id: true } });
      let user: User;
      try {
        user = await db.user.create({
          data: {
            username,
            usernameKey: key,
            passwordHash,
            role: adminKeys.has(key) ? "admin" : "user",
            sessions: { create: session.create },
            memberships: { create: { channelId: GENERAL_CHANNEL_ID, lastReadId: newest?.id ?? 0 } },
          },
        });
      } catch (error) {
        // The unique index on the folded name decides, so two racing registrations cannot both win.
        if (isUniqueViolation(error, "username_key")) throw new AppError("USERNAME_TAKEN", "That username is already taken");
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

    /** Ends every session of the caller, this one included. */
    async logoutAll(user: AuthUser, ip: string): Promise<void> {
      const ended = await sessions.revokeAllOf(user.id, "logout-all");
      await audit.record({ actorId: user.id, action: "logout_all", targetType: "user", targetId: user.id, ip, meta: { sessions: ended.length } });
    },
  };
}
