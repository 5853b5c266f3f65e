import { mkdir } from "node:fs/promises";
import path from "node:path";

/**
 * In development only: a random JWT secret kept in `.data/`, so tokens survive the
 * restarts of watch mode without anyone having to invent a secret first.
 */
export async function devJwtSecret(dataDir: string): Promise<string> {
  const file = Bun.file(path.join(dataDir, "dev-jwt-secret"));
  if (await file.exists()) {
    const existing = (await file.text()).trim();
    if (existing.length >= 32) return existing;
  }
  await mkdir(dataDir, { recursive: true });
  const secret = Buffer.from(crypto.getRandomValues(new Uint8Array(48))).toString("base64url");
  await Bun.write(file, secret);
  return secret;
}
