import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { checkLibraryVersions, expectedLibraries, installedVersion, LibraryVersionError, type ExpectedLibrary } from "../src/lib/internals.ts";
import packageJson from "../package.json";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// src/lib/internals.ts holds what the service reads of socket.io's, the Bun engine's and ioredis's
// internals, valid for exact versions only; the start-up check refuses any other. Unit tests, no server.

/** The LibraryVersionError `checkLibraryVersions(versionOf)` throws; fails the test if it passes instead. */
function versionError(versionOf: (library: ExpectedLibrary) => string | undefined): LibraryVersionError {
  try {
    checkLibraryVersions(versionOf);
  } catch (error) {
    expect(error).toBeInstanceOf(LibraryVersionError);
    return error as LibraryVersionError;
  }
  throw new Error("checkLibraryVersions accepted the versions");
}

describe("the start-up version check", () => {
  test("the installed libraries are the versions the internals were written for", () => {
    for (const library of expectedLibraries) expect({ name: library.name, version: installedVersion(library) }).toEqual({ name: library.name, version: library.version });
    expect(() => checkLibraryVersions()).not.toThrow();
  });

  test("matching versions pass", () => {
    expect(() => checkLibraryVersions((library) => library.version)).not.toThrow();
  });

  test("another version of one library throws, naming the library, both versions and what to re-check", () => {
    const error = versionError((library) => (library.name === "ioredis" ? "5.9.0" : library.version));
    expect(error).toMatchObject({ library: "ioredis", expected: "5.8.2", found: "5.9.0" });
    expect(error.message).toContain("ioredis 5.9.0 is installed");
    expect(error.message).toContain("written for ioredis 5.8.2");
    expect(error.message).toContain("socketTimeoutTimer");
  });

  test("every library is checked, a transitive one too", () => {
    for (const { name } of expectedLibraries) {
      const error = versionError((library) => (library.name === name ? "0.0.0-other" : library.version));
      expect(error.library).toBe(name);
      expect(error.message).toContain(`${name} 0.0.0-other is installed`);
    }
    expect(expectedLibraries.map((library) => library.name)).toContain("socket.io-parser");
  });

  test("a library that is not installed throws too", () => {
    const error = versionError((library) => (library.name === "@socket.io/bun-engine" ? undefined : library.version));
    expect(error).toMatchObject({ library: "@socket.io/bun-engine", found: undefined });
    expect(error.message).toContain("@socket.io/bun-engine is not installed");
  });

  test("the direct dependencies are pinned in package.json to the checked versions", () => {
    // A bump in package.json fails here before it fails at start-up.
    const pinned: Record<string, string> = packageJson.dependencies;
    for (const library of expectedLibraries.filter((library) => !library.loadedBy)) expect(`${library.name}@${pinned[library.name]}`).toBe(`${library.name}@${library.version}`);
  });
});
