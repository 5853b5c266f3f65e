import { existsSync } from "node:fs";
import { aptGetInstall } from "./debian.ts";

/**
 * Debian's Chromium, which test/browser.test.ts drives through playwright-core. Playwright's own
 * browser download cannot work on these machines, so `playwright install` is never run: the
 * browser comes from Debian's `chromium` package instead (.ci/run installs it as well).
 */
export const chromiumPath = "/usr/bin/chromium";

/**
 * The Chromium executable, installed with `apt-get install chromium` when it is missing. Throws
 * (so the browser test fails rather than skips) when it cannot be had: CI must run that test.
 */
export function ensureChromium(): string {
  if (existsSync(chromiumPath)) return chromiumPath;
  const started = performance.now();
  console.log(`${chromiumPath} is missing: installing Debian's chromium package (apt-get install chromium)…`);
  const installed = aptGetInstall("chromium");
  if (!installed || !existsSync(chromiumPath)) {
    throw new Error(
      `Chromium is not installed and \`apt-get install -y --no-install-recommends chromium\` could not install it, ` +
        `but test/browser.test.ts needs ${chromiumPath}`,
    );
  }
  console.log(`chromium installed in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return chromiumPath;
}
