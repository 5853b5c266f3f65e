import type { Prisma } from "../generated/prisma/client.ts";

// What a database error means, told without loading the Prisma client: errors.ts (and whatever
// imports it) maps outages to UNAVAILABLE without pulling in the generated client and its runtime.
// Prisma's errors are recognised by their `name`, which its runtime sets on each class (as its
// `Symbol.toStringTag`), not by `instanceof`, which would need the classes at runtime.

const isPrismaError = <T extends Error>(error: unknown, name: string): error is T => error instanceof Error && error.name === name;
const isKnownRequestError = (error: unknown) => isPrismaError<Prisma.PrismaClientKnownRequestError>(error, "PrismaClientKnownRequestError");

/** True for a unique-constraint violation, optionally on a constraint naming `field`. */
export function isUniqueViolation(error: unknown, field?: string): boolean {
  if (!isKnownRequestError(error) || error.code !== "P2002") return false;
  if (!field) return true;
  return JSON.stringify(error.meta ?? {}).includes(field);
}

// Connection-level failures: the database is down, unreachable or out of connections.
const unavailableCodes = new Set(["P1001", "P1002", "P1008", "P1017", "P2024", "P2037"]);
const unavailablePattern = /Query read timeout|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|Connection terminated|connection timeout|timeout exceeded when trying to connect|the database system is (starting up|shutting down)|terminating connection|is not queryable/i;
// The same from node-postgres itself (the message writer), by SQLSTATE: connection exceptions
// (class 08), too many connections, the server shutting down or restarting, and a statement
// cancelled at statement_timeout (the database too slow to answer in time).
const unavailableSqlStates = /^(08...|53300|57014|57P0[1-3])$/;

// The same as Prisma's driver adapter reports it (meta.driverAdapterError.cause), e.g. a raw
// query's P2010 on a connection the server reset.
const unavailableAdapterKinds = new Set(["DatabaseNotReachable", "ConnectionClosed", "SocketTimeout", "TooManyConnections"]);

function isAdapterUnavailable(meta: unknown): boolean {
  const cause = (meta as { driverAdapterError?: { cause?: { kind?: unknown; originalCode?: unknown } } } | undefined)?.driverAdapterError?.cause;
  if (!cause) return false;
  return unavailableAdapterKinds.has(String(cause.kind)) || (typeof cause.originalCode === "string" && unavailableSqlStates.test(cause.originalCode));
}

/** True when an error means "the database does not answer", not "the query was wrong". */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (isPrismaError(error, "PrismaClientInitializationError")) return true;
  if (isKnownRequestError(error) && (unavailableCodes.has(error.code) || isAdapterUnavailable(error.meta))) return true;
  if (error instanceof Error) {
    const sqlState = (error as { code?: unknown }).code;
    if (typeof sqlState === "string" && unavailableSqlStates.test(sqlState)) return true;
    const cause = (error as { cause?: unknown }).cause;
    return unavailablePattern.test(error.message) || (cause !== undefined && isDatabaseUnavailable(cause));
  }
  return false;
}
