import { describe, expect, test } from "bun:test";
import { Glob } from "bun";
import path from "node:path";

// The layout issue 16 asked for, checked from the source (runtime imports only: `import type`
// is erased and cannot form a cycle at load time):
// - no import cycles in src/;
// - realtime/ is transport only (handshake, rooms, native fan-out, slow clients, the event
//   contract): it imports no feature at run time but the features' schemas its contract names;
// - one topology module decides single instance vs Redis: nothing else builds the Redis adapter.

const root = path.resolve(import.meta.dir, "../src");
const transpiler = new Bun.Transpiler({ loader: "ts" });

async function runtimeImports(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const file of new Glob("**/*.ts").scanSync(root)) {
    if (file.startsWith("generated/")) continue;
    const absolute = path.join(root, file);
    const local = transpiler
      .scanImports(await Bun.file(absolute).text())
      .map((i) => i.path)
      .filter((p) => p.startsWith("."))
      .map((p) => path.relative(root, path.resolve(path.dirname(absolute), p)));
    graph.set(file, local);
  }
  return graph;
}

const graph = await runtimeImports();

describe("the source layout", () => {
  test("the graph was read (a broken scan cannot pass the checks below)", () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(graph.get("app.ts")).toContain("messages/messages.service.ts");
  });

  test("no import cycles", () => {
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const stack: string[] = [];
    const visit = (file: string) => {
      state.set(file, "open");
      stack.push(file);
      for (const next of graph.get(file) ?? []) {
        if (state.get(next) === "open") cycles.push([...stack.slice(stack.indexOf(next)), next].join(" → "));
        else if (!state.has(next)) visit(next);
      }
      stack.pop();
      state.set(file, "done");
    };
    for (const file of graph.keys()) if (!state.has(file)) visit(file);
    expect(cycles).toEqual([]);
  });

  test("realtime/ imports no feature at run time (only lib/, itself, and the schemas its event contract names)", () => {
    const leaks = [...graph]
      .filter(([file]) => file.startsWith("realtime/"))
      .flatMap(([file, imports]) => imports.filter((p) => !p.startsWith("realtime/") && !p.startsWith("lib/") && !p.endsWith(".schemas.ts")).map((p) => `${file} → ${p}`));
    expect(leaks).toEqual([]);
  });

  test("the Redis adapter is built in topology.ts only", async () => {
    const users: string[] = [];
    for (const file of graph.keys()) {
      const imports = transpiler.scanImports(await Bun.file(path.join(root, file)).text()).map((i) => i.path);
      if (imports.includes("@socket.io/redis-streams-adapter")) users.push(file);
    }
    expect(users).toEqual(["topology.ts"]);
  });
});
