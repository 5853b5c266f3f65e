import { PrismaPg } from "@prisma/adapter-pg";
import { Prisma, PrismaClient } from "../generated/prisma/client.ts";

export type Db = PrismaClient;

/**
 * One Prisma client per process, over node-postgres through Prisma's driver adapter:
 * the same code path for the embedded database and a real server, with no native
 * engine to download.
 */
export function createDb(databaseUrl: string, options: { poolSize?: number } = {}): Db {
  const adapter = new PrismaPg({
    connectionString: databaseUrl,
    max: options.poolSize ?? 10,
    // Fail fast instead of queueing forever when the database is gone.
    connectionTimeoutMillis: 5_000,
  });
  return new PrismaClient({ adapter });
}

/** True for a unique-constraint violation, optionally on a constraint naming `field`. */
export function isUniqueViolation(error: unknown, field?: string): boolean {
  if (!(error instanceof Prisma.PrismaClientKnownRequestError) || error.code !== "P2002") return false;
  if (!field) return true;
  return JSON.stringify(error.meta ?? {}).includes(field);
}

// Connection-level failures: the database is down, unreachable or out of connections.
const unavailableCodes = new Set(["P1001", "P1002", "P1008", "P1017", "P2024", "P2037"]);
const unavailablePattern = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|Connection terminated|connection timeout|timeout exceeded when trying to connect|the database system is (starting up|shutting down)|terminating connection/i;

/** True when an error means "the database does not answer", not "the query was wrong". */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (error instanceof Prisma.PrismaClientInitializationError) return true;
  if (error instanceof Prisma.PrismaClientKnownRequestError && unavailableCodes.has(error.code)) return true;
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return unavailablePattern.test(error.message) || (cause !== undefined && isDatabaseUnavailable(cause));
  }
  return false;
}
