/** argon2id through Bun's built-in, with its defaults (64 MiB, t=2). */
export function hashPassword(password: string): Promise<string> {
  return Bun.password.hash(password, { algorithm: "argon2id" });
}

// Verified against when the username is unknown, so a miss costs the same as a
// wrong password and response time does not reveal which accounts exist. Made once,
// ahead of the first login (see `prepareDummyHash`), so even that one is not slower.
let dummyHash: Promise<string> | undefined;

const getDummyHash = () => (dummyHash ??= hashPassword(crypto.randomUUID()));

/** Computes the dummy hash in the background; called when the auth service is built. */
export function prepareDummyHash(): void {
  void getDummyHash();
}

/** Checks `password` against `hash`, or against a dummy hash when there is no account. */
export async function verifyPassword(password: string, hash: string | undefined): Promise<boolean> {
  if (hash === undefined) {
    await Bun.password.verify(password, await getDummyHash());
    return false;
  }
  return Bun.password.verify(password, hash);
}
