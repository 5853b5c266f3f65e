import { AppError } from "../lib/errors.ts";
import type { AuthUser, TokenSigner } from "../lib/tokens.ts";
import type { AccessGuard } from "./access-guard.ts";

/**
 * Turns an access token into the caller, for REST and sockets alike: signature, expiry
 * and claims (the signer), then the session and the account as they are now (the
 * guard). The role is the current one, not the one the token was signed with.
 */
export function createAuthenticator(signer: TokenSigner, guard: AccessGuard) {
  async function current(user: AuthUser): Promise<AuthUser> {
    const state = await guard.check(user.sessionId, user.id);
    // Banned first: a ban also revokes every session, and the answer must say why (api.md §7).
    if (state.banned) throw new AppError("BANNED", "This account is banned");
    if (state.revoked) throw new AppError("UNAUTHORIZED", "This session has ended; sign in again");
    return state.role === user.role ? user : { ...user, role: state.role };
  }

  return {
    async authenticate(token: string): Promise<AuthUser> {
      return current(await signer.verifyAccess(token));
    },
    /** Re-checks an already authenticated caller (a socket, before each action). */
    current,
  };
}

export type Authenticator = ReturnType<typeof createAuthenticator>;
