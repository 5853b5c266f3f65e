import { describe, expect, setDefaultTimeout, test } from "bun:test";
import path from "node:path";
import { Prisma } from "../src/generated/prisma/client.ts";
import { isDatabaseUnavailable, isUniqueViolation } from "../src/lib/db-errors.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// src/lib/db-errors.ts tells what a database error means without the Prisma client, so that
// errors.ts (imported nearly everywhere) does not load it. Unit tests, no server.

const root = path.join(import.meta.dir, "..");

/** The modules a fresh Bun process has loaded after importing `file` (Bun lists ES modules in require.cache too). */
async function modulesLoadedBy(file: string): Promise<string[]> {
  const script = `await import(${JSON.stringify(path.join(root, file))}); console.log(JSON.stringify(Object.keys(require.cache)));`;
  const child = Bun.spawn([process.execPath, "-e", script], { cwd: root, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  expect({ code, err }).toEqual({ code: 0, err: "" });
  return JSON.parse(out) as string[];
}

const isPrisma = (module: string) => module.includes(`${path.sep}generated${path.sep}prisma${path.sep}`) || module.includes(`${path.sep}@prisma${path.sep}`);

describe("loading", () => {
  test("importing src/lib/errors.ts loads neither the generated Prisma client nor Prisma's runtime", async () => {
    const loaded = await modulesLoadedBy("src/lib/errors.ts");
    expect(loaded).toContain(path.join(root, "src/lib/db-errors.ts"));
    expect(loaded.filter(isPrisma)).toEqual([]);
  });

  test("the check sees them when they load: src/lib/db.ts brings the client", async () => {
    const loaded = await modulesLoadedBy("src/lib/db.ts");
    expect(loaded.some((module) => module.includes(`${path.sep}generated${path.sep}prisma${path.sep}`))).toBe(true);
  });
});

describe("classification without instanceof", () => {
  const known = (code: string, meta?: Record<string, unknown>) => new Prisma.PrismaClientKnownRequestError("failed", { code, clientVersion: Prisma.prismaVersion.client, meta });

  test("a unique violation is told by Prisma's own error, on the constraint named", () => {
    const error = known("P2002", { target: "users_username_key" });
    expect(isUniqueViolation(error)).toBe(true);
    expect(isUniqueViolation(error, "username_key")).toBe(true);
    expect(isUniqueViolation(error, "name_skeleton")).toBe(false);
    expect(isUniqueViolation(known("P2025"))).toBe(false);
  });

  test("something else with Prisma's code is no unique violation", () => {
    expect(isUniqueViolation(Object.assign(new Error("failed"), { code: "P2002" }))).toBe(false);
    expect(isUniqueViolation({ name: "PrismaClientKnownRequestError", code: "P2002" })).toBe(false);
  });

  test("outages: an initialization error, connection codes, the adapter's connection kinds", () => {
    expect(isDatabaseUnavailable(new Prisma.PrismaClientInitializationError("Can't reach database server", Prisma.prismaVersion.client))).toBe(true);
    expect(isDatabaseUnavailable(known("P1001"))).toBe(true);
    expect(isDatabaseUnavailable(known("P2010", { driverAdapterError: { cause: { kind: "ConnectionClosed" } } }))).toBe(true);
    expect(isDatabaseUnavailable(known("P2010", { driverAdapterError: { cause: { originalCode: "57P01" } } }))).toBe(true);
    expect(isDatabaseUnavailable(Object.assign(new Error("canceling statement due to statement timeout"), { code: "57014" }))).toBe(true);
  });

  test("a query that was wrong is no outage", () => {
    expect(isDatabaseUnavailable(known("P2002"))).toBe(false);
    expect(isDatabaseUnavailable(known("P2010", { driverAdapterError: { cause: { originalCode: "42P01" } } }))).toBe(false);
    expect(isDatabaseUnavailable(new Error("relation does not exist"))).toBe(false);
    expect(isDatabaseUnavailable("P1001")).toBe(false);
  });
});
