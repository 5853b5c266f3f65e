import path from "node:path";

// README.md's code blocks, found by the section they sit in, for the tests that run them as written
// (test/readme.test.ts, test/readme-setup.test.ts, and the container test, test/containers/run.ts).
// No bun:test import here: the container test runs outside the test runner.

/** The repository root (test/helpers/process.ts's projectRoot needs the test runner). */
export const repoRoot = path.resolve(import.meta.dir, "../..");

export interface Fence {
  /** The info string after the opening fence ("sh", "ts"), "" for none. */
  language: string;
  /** The block's text, each line ending with a newline. */
  body: string;
  /** The heading line the block sits under ("## Quick start"). */
  section: string;
  /** 1-based line of the opening fence. */
  line: number;
}

/** Every fenced block of a Markdown text, in order (a `#` line inside a block is not a heading). */
export function fencesOf(markdown: string): Fence[] {
  const fences: Fence[] = [];
  let section = "";
  let open: { language: string; line: number; lines: string[] } | undefined;
  for (const [i, line] of markdown.split("\n").entries()) {
    if (open) {
      if (line === "```") {
        fences.push({ language: open.language, body: open.lines.map((l) => `${l}\n`).join(""), section, line: open.line });
        open = undefined;
      } else open.lines.push(line);
      continue;
    }
    const fence = /^```(\S*)$/.exec(line);
    if (fence) open = { language: fence[1]!, line: i + 1, lines: [] };
    else if (/^#{1,6} /.test(line)) section = line;
  }
  if (open) throw new Error(`README.md: the block opened at line ${open.line} is never closed`);
  return fences;
}

/**
 * Every block of README.md that is code, with the test that runs it as written. test/readme-setup.test.ts
 * holds the README to this list: a block with a language tag that is not here fails it (plain-text
 * trees have no tag). `marker` tells the block from any other of its language in its section.
 */
export const runBlocks = {
  quickStart: { section: "## Quick start", language: "sh", marker: "npm install && npx bun run dev\n", runBy: "test/readme-setup.test.ts" },
  backgroundDev: { section: "## Quick start", language: "sh", marker: "kill -- -$!", runBy: "test/readme-setup.test.ts" },
  curl: { section: "## API at a glance", language: "sh", marker: "/api/auth/register", runBy: "test/readme.test.ts" },
  socketScript: { section: "## API at a glance", language: "ts", marker: 'from "socket.io-client"', runBy: "test/readme.test.ts" },
  docker: { section: "### Deploy with Docker", language: "sh", marker: "docker compose up -d --build", runBy: "test/containers/run.ts" },
  severalInstances: { section: "### Running several instances", language: "sh", marker: "PORT=3101 bun src/index.ts &", runBy: "test/readme-setup.test.ts" },
} as const;
export type RunBlock = keyof typeof runBlocks;

/** The fence of one of `runBlocks` in `markdown`; throws when the README has none or several that fit. */
export function findRunBlock(markdown: string, name: RunBlock): Fence {
  const { section, language, marker } = runBlocks[name];
  const found = fencesOf(markdown).filter((f) => f.section === section && f.language === language && f.body.includes(marker));
  if (found.length !== 1) {
    throw new Error(`README.md: expected one \`\`\`${language} block containing ${JSON.stringify(marker)} under "${section}" (${name}), found ${found.length}`);
  }
  return found[0]!;
}

/** The text of one of `runBlocks`, from README.md in `root` (the working tree unless told). */
export async function readmeBlock(name: RunBlock, root = repoRoot): Promise<string> {
  return findRunBlock(await Bun.file(path.join(root, "README.md")).text(), name).body;
}
