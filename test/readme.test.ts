import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { ensureCommand } from "./helpers/debian.ts";
import { projectRoot } from "./helpers/process.ts";
import { readmeBlock } from "./helpers/readme.ts";
import { startTestServer } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// The README's API examples, taken from README.md as they stand and run verbatim against a server
// on the port they name (3000), so the README cannot rot: the curl block in bash (and in zsh when
// it is installed), twice (the second run finds the name taken and logs in), and the Socket.IO
// script with the token the curl block got, and with a bad one. test/readme-setup.test.ts runs the
// set-up blocks, and checks that every code block of the README is run by some test.
setDefaultTimeout(TEST_TIMEOUT_MS);

const curlBlock = await readmeBlock("curl");
const socketBlock = await readmeBlock("socketScript");

const t = await startTestServer({ env: { PORT: "3000" } });
// What the README asks for, from Debian's packages when missing (a fresh machine has neither).
ensureCommand("jq");
ensureCommand("zsh");
const shells = ["bash", "zsh"];

/** Runs the curl block in `shell`, then prints the TOKEN it set (the block's own variable). */
async function runCurlBlock(shell: string): Promise<{ code: number; token: string; outputs: unknown[] }> {
  const script = `${curlBlock}\necho "TOKEN=$TOKEN"\n`;
  const proc = Bun.spawn([shell, "-c", script], { stdout: "pipe", stderr: "pipe" });
  const [code, out] = await Promise.all([proc.exited, new Response(proc.stdout).text()]);
  const lines = out.trim().split("\n");
  const token = lines.pop()!.replace(/^TOKEN=/, "");
  return { code, token, outputs: lines.map((line) => JSON.parse(line) as unknown) };
}

describe("the curl block", () => {
  test("is in the README", () => {
    expect(curlBlock).toBeDefined();
    // Quoted URLs: zsh would take `?` as a glob otherwise.
    for (const url of curlBlock!.match(/curl -s (-w '\\n' )?\S+/g)!) expect(url).toMatch(/^curl -s (-w '\\n' )?"http:\/\/localhost:3000\//);
  });

  for (const shell of shells) {
    test(`runs in ${shell}, twice: a token both times (the second run logs in), users, history and the log as JSON`, async () => {
      for (let run = 0; run < 2; run++) {
        const { code, token, outputs } = await runCurlBlock(shell);
        expect(code).toBe(0);
        expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
        const [users, history, events] = outputs as [{ username: string }[], unknown[], { events: unknown[]; head: number }];
        expect(users.map((u) => u.username)).toContain("алиса");
        expect(Array.isArray(history)).toBe(true);
        expect(events).toMatchObject({ events: expect.any(Array), head: expect.any(Number) });
      }
    });
  }
});

describe("the Socket.IO script", () => {
  // In the checkout (under .data/, which git ignores), so socket.io-client resolves as in the README.
  const dir = path.join(projectRoot, ".data", `readme-${process.pid}`);
  const file = path.join(dir, "hello.ts");
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const run = async (token: string) => {
    await mkdir(dir, { recursive: true });
    await Bun.write(file, socketBlock!);
    const proc = Bun.spawn([process.execPath, file], { env: { ...process.env, TOKEN: token }, stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => proc.kill(), 15_000);
    const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    clearTimeout(timer);
    return { code, out, err };
  };

  test("sends, sees its own message, is acked and exits by itself", async () => {
    expect(socketBlock).toBeDefined();
    const { token } = await runCurlBlock("bash");
    const { code, out, err } = await run(token);
    expect({ code, err }).toEqual({ code: 0, err: "" });
    expect(out).toContain("алиса: привет");
    const [last] = (await t.database.sql`SELECT content FROM messages ORDER BY id DESC LIMIT 1`) as { content: string }[];
    expect(last!.content).toBe("привет");
  });

  test("with a bad token: prints Unauthorized and exits 1, no unhandled rejection", async () => {
    const { code, out, err } = await run("not-a-token");
    expect(code).toBe(1);
    expect(err.trim()).toBe("Unauthorized");
    expect(out).toBe("");
  });
});
