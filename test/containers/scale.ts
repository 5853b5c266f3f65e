import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The README's recipe for one more backend, applied to copies of docker-compose.yml and
 * deploy/nginx.conf in `dir`: a `backend3` service merged from the same `*backend` definition,
 * its `server` line in the upstream, and nginx waiting for it too. Returns the compose file.
 */
export function withThirdBackend(root: string, dir: string): string {
  const compose = readFileSync(join(root, "docker-compose.yml"), "utf8");
  const nginx = readFileSync(join(root, "deploy/nginx.conf"), "utf8");
  const edits: [string, RegExp, string][] = [
    ["the backend2 service", /^(  backend2:\n    <<: \*backend\n)/m, "$1\n  backend3:\n    <<: *backend\n"],
    ["nginx's depends_on backend2", /^(      backend2:\n        condition: service_healthy\n)/m, "$1      backend3:\n        condition: service_healthy\n"],
    ["nginx's config mount", /\.\/deploy\/nginx\.conf:/, `${join(dir, "deploy/nginx.conf")}:`],
  ];
  let scaled = compose;
  for (const [what, pattern, replacement] of edits) {
    if (!pattern.test(scaled)) throw new Error(`docker-compose.yml no longer has ${what} where the README's recipe edits it`);
    scaled = scaled.replace(pattern, replacement);
  }
  const server = /^([ \t]*)server backend2:3000;\n/m;
  if (!server.test(nginx)) throw new Error("deploy/nginx.conf no longer has `server backend2:3000;`");
  mkdirSync(join(dir, "deploy"), { recursive: true });
  writeFileSync(join(dir, "deploy/nginx.conf"), nginx.replace(server, "$&$1server backend3:3000;\n"));
  const file = join(dir, "docker-compose.yml");
  writeFileSync(file, scaled);
  return file;
}
