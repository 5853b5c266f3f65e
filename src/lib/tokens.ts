import { sign, verify } from "hono/jwt";
import { LRUCache } from "lru-cache";
import { z } from "zod";
import { AppError } from "./errors.ts";

/** The claims of an access token (api.md §1). `sub` is the user id as a string, per RFC 7519. */
export const accessClaimsSchema = z.object({
  sub: z.string().regex(/^\d+$/),
  username: z.string(),
  role: z.enum(["user", "moderator", "admin"]),
  // Always a UUID when we sign it; anything else must be refused here, not reach the database.
  sid: z.uuid(),
  iat: z.number().int(),
  exp: z.number().int(),
});

export interface AuthUser {
  id: number;
  username: string;
  role: "user" | "moderator" | "admin";
  sessionId: string;
}

export interface TokenSigner {
  signAccess(user: AuthUser): Promise<string>;
  /** Verifies signature (HS256 only), expiry and shape; throws `UNAUTHORIZED` otherwise. */
  verifyAccess(token: string): Promise<AuthUser>;
}

/** Verified access tokens kept in memory at most; past this the least recently used go first. */
const verifiedCacheSize = 10_000;

export function createTokenSigner(secret: string, ttlSeconds: number): TokenSigner {
  // A token's signature and claims never change, so each is checked once (HMAC through
  // WebCrypto and the claims schema cost more than the rest of a cached read). Expiry is
  // re-checked on every use; revocation is the access guard's business, not this cache's.
  const verified = new LRUCache<string, { user: AuthUser; exp: number }>({ max: verifiedCacheSize });

  async function verifyOnce(token: string): Promise<{ user: AuthUser; exp: number }> {
    let payload: unknown;
    try {
      // The algorithm is pinned: a token claiming "none" or RS256 is refused.
      payload = await verify(token, secret, "HS256");
    } catch {
      throw new AppError("UNAUTHORIZED", "Invalid or expired token");
    }
    const claims = accessClaimsSchema.safeParse(payload);
    if (!claims.success) throw new AppError("UNAUTHORIZED", "Invalid or expired token");
    const { sub, username, role, sid, exp } = claims.data;
    return { user: { id: Number(sub), username, role, sessionId: sid }, exp };
  }

  return {
    async signAccess(user) {
      const now = Math.floor(Date.now() / 1000);
      return sign(
        { sub: String(user.id), username: user.username, role: user.role, sid: user.sessionId, iat: now, exp: now + ttlSeconds },
        secret,
        "HS256",
      );
    },
    async verifyAccess(token) {
      let entry = verified.get(token);
      if (!entry) {
        entry = await verifyOnce(token);
        verified.set(token, entry);
      }
      if (entry.exp <= Math.floor(Date.now() / 1000)) {
        verified.delete(token);
        throw new AppError("UNAUTHORIZED", "Invalid or expired token");
      }
      return entry.user;
    },
  };
}

/** A new opaque refresh token: 256 random bits, base64url. */
export function newRefreshToken(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
}

/** Refresh tokens are stored only as this hash; SHA-256 suffices for 256-bit random values. */
export function hashRefreshToken(token: string): string {
  return new Bun.CryptoHasher("sha256").update(token).digest("hex");
}
