/**
 * Debian packages a test needs and a fresh machine may not have (Chromium, zsh, jq): installed with
 * apt-get, as root or through sudo, updating the package index once if the first try fails (a new
 * machine may have none). True when the install ran without an error.
 */
export function aptGetInstall(...packages: string[]): boolean {
  const sudo = process.getuid?.() === 0 ? [] : ["sudo"];
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const run = (args: string[]) => Bun.spawnSync([...sudo, ...args], { env, stdout: "inherit", stderr: "inherit" }).exitCode === 0;
  const install = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "--no-install-recommends", ...packages];
  return run(install) || (run(["apt-get", "update", "-qq"]) && run(install));
}

/** The path of `command`, installing Debian's `pkg` when it is missing; throws when it cannot be had (the test must run). */
export function ensureCommand(command: string, pkg = command): string {
  const found = Bun.which(command);
  if (found) return found;
  console.log(`${command} is missing: installing Debian's ${pkg} package (apt-get install ${pkg})…`);
  const installed = aptGetInstall(pkg) ? Bun.which(command) : null;
  if (!installed) throw new Error(`${command} is not installed and \`apt-get install ${pkg}\` could not install it`);
  return installed;
}
