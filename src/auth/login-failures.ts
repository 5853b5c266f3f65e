import type { Config } from "../config.ts";
import { consumeOrThrow, type LimiterFactory } from "../lib/rate-limit.ts";

export type LoginFailures = ReturnType<typeof createLoginFailures>;

/**
 * The limits on guessing a password (api.md §7, "Failed logins"). Usernames are public, so a
 * limit that refuses the account itself would let anyone lock anyone out (an admin included).
 * Instead, following OWASP's advice to throttle rather than lock:
 * - failures are counted per (folded username, client address): once that budget is spent, that
 *   address is refused for that username (429), whatever password it sends, and every other
 *   address, the owner's included, still has its own;
 * - failures are also counted per username from every address: once that larger budget is spent
 *   the account is under a distributed attack, and every attempt on it waits `LOGIN_BACKOFF_DELAY_MS`
 *   before the password is checked (each guess then holds a connection for that long), the right
 *   password included, but none is refused: the owner gets in, a little late.
 * A success resets its own address's count only; the username's count runs out with its window
 * (if the owner's login reset it, the attacker would get a fresh fast budget each time).
 */
export function createLoginFailures(deps: {
  createLimiter: LimiterFactory;
  config: Pick<Config, "RATE_LIMIT_LOGIN_FAILURES" | "RATE_LIMIT_LOGIN_FAILURES_GLOBAL" | "LOGIN_BACKOFF_DELAY_MS">;
  /** An attempt is being slowed down (for /metrics). */
  onDelayed?: () => void;
  /** A username's budget from every address has just run out (for the log). */
  onBackoffStarted?: (usernameKey: string) => void;
}) {
  const { createLimiter, config, onDelayed, onBackoffStarted } = deps;
  const perAddress = createLimiter("login-failures", config.RATE_LIMIT_LOGIN_FAILURES);
  const perUsername = createLimiter("login-failures-global", config.RATE_LIMIT_LOGIN_FAILURES_GLOBAL);
  const globalPoints = config.RATE_LIMIT_LOGIN_FAILURES_GLOBAL?.points;

  return {
    /**
     * Runs `attempt` (a lookup and a password check for `usernameKey` from `ip`) under the limits,
     * and counts its outcome: `ok` false is a failure. A point is taken from the address's budget
     * before the check, so attempts sent in parallel cannot overshoot it; it is given back when no
     * check happened (the server was busy, the database away) and the count is reset on success.
     */
    async check<T extends { ok: boolean }>(usernameKey: string, ip: string, attempt: () => Promise<T>): Promise<T> {
      // '@' is never part of a username, so no two (username, address) pairs share a key.
      const pair = `${usernameKey}@${ip}`;
      await consumeOrThrow(perAddress, pair, "Too many failed logins for this username from this address; try again later");
      let outcome: T | undefined;
      try {
        const spread = await perUsername?.get(usernameKey);
        if (spread && spread.remainingPoints <= 0) {
          onDelayed?.();
          await Bun.sleep(config.LOGIN_BACKOFF_DELAY_MS);
        }
        outcome = await attempt();
      } finally {
        // Best effort: the caller's own error (busy, database away) is the one to report.
        if (outcome === undefined) await perAddress?.reward(pair, 1).catch(() => undefined);
      }
      if (outcome.ok) {
        await perAddress?.delete(pair);
      } else if (perUsername) {
        const counted = await perUsername.penalty(usernameKey, 1);
        if (counted.consumedPoints === globalPoints) onBackoffStarted?.(usernameKey);
      }
      return outcome;
    },
  };
}
