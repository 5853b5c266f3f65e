import pLimit from "p-limit";
import { AppError } from "./errors.ts";

/**
 * argon2id at OWASP's recommended minimum (Password Storage Cheat Sheet: m=19 MiB, t=2, p=1),
 * not at Bun's default (m=64 MiB, t=2): `bun run bench --only=password` measures both. OWASP's
 * five settings are meant to be equally strong; this one costs about a third of the CPU time and
 * memory of Bun's, so a 2-core instance signs people in three times as fast and PASSWORD_HASH_
 * CONCURRENCY hashes at once hold 19 MiB each, not 64. Hashes made with other parameters still
 * verify (the parameters are in the hash) and are redone with these at the next login.
 */
export const argon2Parameters = { algorithm: "argon2id", memoryCost: 19_456, timeCost: 2 } as const;
/** Bun.password's own default for argon2id, for comparison (bench/load/password.ts). */
export const bunDefaultArgon2 = { algorithm: "argon2id", memoryCost: 65_536, timeCost: 2 } as const;

const argon2id = (password: string) => Bun.password.hash(password, argon2Parameters);

/** The PHC prefix a hash made with `argon2Parameters` starts with (Bun always uses one lane). */
const currentPrefix = `$argon2id$v=19$m=${argon2Parameters.memoryCost},t=${argon2Parameters.timeCost},p=1$`;

/** True for a hash made with other parameters (Bun's default, an older setting): redo it at login. */
export const needsRehash = (hash: string) => !hash.startsWith(currentPrefix);

// Verified against when the username is unknown, so a miss costs the same as a
// wrong password and response time does not reveal which accounts exist. Made once,
// ahead of the first login (see `prepareDummyHash`), so even that one is not slower.
let dummyHash: Promise<string> | undefined;

const getDummyHash = () => (dummyHash ??= argon2id(crypto.randomUUID()));

/** Computes the dummy hash in the background; called when the auth service is built. */
export function prepareDummyHash(): void {
  void getDummyHash();
}

export type PasswordHasher = ReturnType<typeof createPasswordHasher>;

/** What the gate is doing, for /metrics. */
export interface HashingStats {
  inFlight: number;
  /** The most in flight at once since start: never above `concurrency`. */
  inFlightMax: number;
  queued: number;
}

/**
 * Every hash and verification passes through one gate per instance: each takes its memoryCost
 * (19 MiB, or the 64 MiB of an old hash being verified) while it runs, so at most `concurrency` run at once (a login storm cannot take the memory, whatever
 * the number of cores Bun's thread pool has), at most `queue` wait for a turn, and any more are
 * refused at once with 503 UNAVAILABLE and Retry-After: a quick "come back" beats a queue that
 * grows without bound while every caller waits longer.
 */
export function createPasswordHasher({ concurrency, queue, onRefused }: { concurrency: number; queue: number; onRefused?: () => void }) {
  const limit = pLimit(concurrency);
  const stats: HashingStats = { inFlight: 0, inFlightMax: 0, queued: 0 };

  function gated<T>(work: () => Promise<T>): Promise<T> {
    // pendingCount is exact at this point: p-limit takes a free slot synchronously.
    if (limit.activeCount >= concurrency && limit.pendingCount >= queue) {
      onRefused?.();
      return Promise.reject(new AppError("UNAVAILABLE", "The server is busy checking passwords; retry in a moment", undefined, 1));
    }
    stats.queued++;
    return limit(async () => {
      stats.queued--;
      stats.inFlight++;
      stats.inFlightMax = Math.max(stats.inFlightMax, stats.inFlight);
      try {
        return await work();
      } finally {
        stats.inFlight--;
      }
    });
  }

  return {
    stats: (): Readonly<HashingStats> => stats,

    hash(password: string): Promise<string> {
      return gated(() => argon2id(password));
    },

    /** Checks `password` against `hash`, or against a dummy hash when there is no account. */
    async verify(password: string, hash: string | undefined): Promise<boolean> {
      if (hash === undefined) {
        const dummy = await getDummyHash();
        await gated(() => Bun.password.verify(password, dummy));
        return false;
      }
      return gated(() => Bun.password.verify(password, hash));
    },
  };
}
