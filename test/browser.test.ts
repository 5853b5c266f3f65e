import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { copyFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { ensureChromium } from "./helpers/browser.ts";
import { createTestDatabase } from "./helpers/db.ts";
import { productionEnv, projectRoot, registerAt, startServerProcess, type ServerProcess } from "./helpers/process.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// Issue 9: the chat page at `/`, in real Chromium (Debian's, driven by playwright-core), against
// the real entry point (`bun src/index.ts`, production mode) as a child process. Two browser
// contexts sign up as alice and bob through the page, and what they do goes through the page's DOM
// contract (#auth, #status, #me, #offline, #channels, #directs, #people, #messages, #pending, #composer, #typing,
// #search, and the #create-channel, #browse and #members dialogs);
// REST is used only for what a third party does (carol's messages, edits and deletions, channels being
// created) or another client of the same user (a join and a leave the page must follow live). The server is restarted on the same database and port while both pages stay open: they resume
// with `auth.since` (a replay, or `resync` and the newest page; api.md §11). Screenshots are saved under
// test-artifacts/ (with UPDATE_SCREENSHOT=1, the desktop one also to docs/screenshot.png, for the README).

/** Tests that restart the server or open more pages get longer than the default. */
const longTimeout = 45_000;
/** How long the page gets to show something (a message, a state) before an assertion fails. */
const uiTimeout = 10_000;
const password = "correct horse battery";

// Fails (never skips) when Chromium cannot be had: CI must run this file.
const executablePath = ensureChromium();

const artifactsDir = path.join(projectRoot, "test-artifacts");
await mkdir(artifactsDir, { recursive: true });

/** A TCP port nobody listens on right now, so the restarted server can take the same one. */
function freePort(): number {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const { port } = listener;
  listener.stop(true);
  return port;
}

const testDb = await createTestDatabase();
const port = freePort();
const env = productionEnv(testDb.url, { PORT: String(port) });
let server: ServerProcess = await startServerProcess(env);
expect(server.url).toBe(`http://127.0.0.1:${port}`);

const browser: Browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const contexts: BrowserContext[] = [];

afterAll(async () => {
  for (const context of contexts) await context.close().catch(() => {});
  await browser.close();
  if (server.proc.exitCode === null && server.proc.signalCode === null) await server.stop("SIGTERM");
});

interface OpenPage {
  page: Page;
  /** Uncaught exceptions in the page (each one a bug in it). */
  errors: string[];
  /** URLs of every request the page made, to see how it catches up. */
  requests: string[];
  /** The `auth` of every Socket.IO CONNECT the page sent (polling or websocket), to see what it resumes from. */
  handshakes: { token?: string; since?: Record<string, number> }[];
  /** Every Socket.IO payload the page sent (websocket frames and polling bodies), to see what it sent. */
  sent: string[];
}

/** CONNECT packets (`40{…}` for the main namespace) in an engine.io payload; polling batches them with \x1e. */
function connectPackets(payload: string | Buffer | null): OpenPage["handshakes"] {
  return String(payload ?? "")
    .split("\x1e")
    .filter((packet) => packet.startsWith("40{"))
    .map((packet) => JSON.parse(packet.slice(2)));
}

async function openPage(options: Parameters<Browser["newContext"]>[0] = { viewport: { width: 1280, height: 800 } }): Promise<OpenPage> {
  // One time zone, so "Today" and "Yesterday" in the date separators are the test's days too.
  const context = await browser.newContext({ timezoneId: "UTC", locale: "en-US", ...options });
  contexts.push(context);
  // The page's CSP forbids inline handlers, so markup rendered as HTML would be blocked rather than
  // run: record every CSP violation too (an init script runs before the page's own, outside its CSP).
  await context.addInitScript(() => {
    const violations: string[] = [];
    Object.assign(globalThis, { __cspViolations: violations });
    globalThis.addEventListener("securitypolicyviolation", (event) => {
      const e = event as unknown as { violatedDirective: string; blockedURI: string; sample: string };
      violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`);
    });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(uiTimeout);
  const errors: string[] = [];
  const requests: string[] = [];
  const handshakes: OpenPage["handshakes"] = [];
  const sent: string[] = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("request", (request) => {
    requests.push(request.url());
    if (request.method() !== "POST" || !request.url().includes("/socket.io/")) return;
    sent.push(String(request.postData() ?? ""));
    handshakes.push(...connectPackets(request.postData()));
  });
  page.on("websocket", (ws) =>
    ws.on("framesent", ({ payload }) => {
      sent.push(String(payload));
      handshakes.push(...connectPackets(payload));
    }),
  );
  await page.goto(server.url);
  return { page, errors, requests, handshakes, sent };
}

/** Fills `#auth` for a login, or (after switching it to creating an account) a registration. */
async function fillAuth(page: Page, username: string, action: "register" | "login", pass = password, confirm = pass) {
  const auth = page.locator("#auth");
  const mode = await auth.getAttribute("data-mode");
  if (mode !== action) await auth.locator(`button[data-action=mode-${action}]`).click();
  await auth.locator("input[name=username]").fill(username);
  await auth.locator("input[name=password]").fill(pass);
  if (action === "register") await auth.locator("input[name=confirm]").fill(confirm);
  else expect(await auth.locator("input[name=confirm]").isVisible()).toBe(false);
  await auth.locator(`button[data-action=${action}]`).click();
}

/** Signs in through `#auth` (register or login) and waits for the app to be online as `username`. */
async function signIn(page: Page, username: string, action: "register" | "login") {
  const auth = page.locator("#auth");
  await fillAuth(page, username, action);
  await auth.waitFor({ state: "hidden" });
  await page.locator("#app").waitFor({ state: "visible" });
  await page.locator("#status[data-state=online]").waitFor();
  expect((await page.locator("#me").textContent())?.trim()).toBe(username);
}

interface ShownMessage {
  id: number;
  author: string;
  content: string;
  edited: boolean;
  deleted: boolean;
  own: boolean;
}

/** What `#messages` shows, in DOM order. */
function shownMessages(page: Page): Promise<ShownMessage[]> {
  return page.$$eval("#messages li[data-message-id]", (items) =>
    items.map((li) => ({
      id: Number(li.getAttribute("data-message-id")),
      author: li.querySelector(".author")?.textContent?.trim() ?? "",
      content: li.querySelector(".content")?.textContent ?? "",
      edited: li.querySelector(".edited") !== null,
      deleted: li.getAttribute("data-deleted") === "true",
      own: li.querySelector("button[data-action=edit]") !== null && li.querySelector("button[data-action=delete]") !== null,
    })),
  );
}

/** Polls `#messages` until `check` holds; on timeout, fails with what the page showed. */
async function waitForMessages(page: Page, what: string, check: (shown: ShownMessage[]) => boolean, ms = uiTimeout): Promise<ShownMessage[]> {
  const deadline = performance.now() + ms;
  for (;;) {
    const shown = await shownMessages(page);
    if (check(shown)) return shown;
    if (performance.now() > deadline) throw new Error(`#messages never showed ${what} within ${ms} ms; it showed:\n${JSON.stringify(shown, null, 1)}`);
    await Bun.sleep(50);
  }
}

/** Waits until the message with exactly `content` is shown, and returns it. */
async function waitForContent(page: Page, content: string): Promise<ShownMessage> {
  const shown = await waitForMessages(page, JSON.stringify(content), (all) => all.some((m) => m.content === content));
  return shown.find((m) => m.content === content)!;
}

/** Types `content` into the composer and sends it (Enter, or the submit button). */
async function send(page: Page, content: string, how: "enter" | "button" = "enter") {
  const textarea = page.locator("#composer textarea[name=content]");
  await textarea.fill(content);
  if (how === "enter") await textarea.press("Enter");
  else await page.locator("#composer button[type=submit]").click();
  await waitForContent(page, content);
  // The composer is cleared once the message is sent.
  await page.waitForFunction('document.querySelector("#composer textarea[name=content]")?.value === ""');
}

function ids(shown: ShownMessage[]) {
  return shown.map((m) => m.id);
}

async function screenshot(page: Page, name: string): Promise<string> {
  const file = path.join(artifactsDir, name);
  await page.screenshot({ path: file });
  console.log(`artifact: ${path.relative(projectRoot, file)}`);
  return file;
}

/**
 * The steps share the pages and the server, in order: once one fails, the later ones fail at once
 * (pointing at it) instead of each waiting out its timeouts against a page in an unknown state.
 */
let failedStep: string | undefined;
function step(name: string, body: () => Promise<void>, timeout?: number) {
  test(
    name,
    async () => {
      if (failedStep) throw new Error(`not run: an earlier step failed (${failedStep})`);
      try {
        await body();
      } catch (error) {
        failedStep = name;
        throw error;
      }
    },
    timeout,
  );
}

/** A REST call as someone, against a given server (the one running, or the side one). */
async function call(url: string, token: string, method: string, route: string, body?: unknown): Promise<Response> {
  return fetch(`${url}${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** Logs in over REST: a session of its own (another client of that user). */
async function loginAs(username: string): Promise<{ token: string; user: { id: number } }> {
  const res = await fetch(`${server.url}/api/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password }) });
  expect(res.status).toBe(200);
  return (await res.json()) as { token: string; user: { id: number } };
}

/** A REST call that must succeed; its JSON (undefined for a 204). */
async function rest(token: string, method: string, route: string, body?: unknown): Promise<{ id: number } | undefined> {
  const res = await call(server.url, token, method, route, body);
  expect(res.status).toBeLessThan(300);
  return res.status === 204 ? undefined : ((await res.json()) as { id: number });
}

/** General's id and head (`seq`), as the channel list gives them. */
async function generalHead(token: string): Promise<{ id: number; seq: number }> {
  const listed = (await (await call(server.url, token, "GET", "/api/channels")).json()) as { id: number; name: string; seq: number }[];
  return listed.find((c) => c.name === "general")!;
}

/**
 * Stops the server while the pages stay open, does `meanwhile` through a second process on the same
 * database (on another port, so the pages cannot reach it), and starts the server again on the same
 * port with `overrides`; resolves once both pages are online again.
 */
async function restartWith(meanwhile: (sideUrl: string) => Promise<void>, overrides: Record<string, string> = {}): Promise<void> {
  const stopped = await server.stop("SIGTERM");
  expect(stopped.code).toBe(0);
  await Promise.all([alice, bob].map(({ page }) => page.locator("#status[data-state=offline]").waitFor()));
  const side = await startServerProcess(productionEnv(testDb.url));
  await meanwhile(side.url);
  expect((await side.stop("SIGTERM")).code).toBe(0);
  for (const { page } of [alice, bob]) expect(await page.locator("#status").getAttribute("data-state")).toBe("offline");
  server = await startServerProcess({ ...env, ...overrides });
  expect(server.url).toBe(`http://127.0.0.1:${port}`);
  await Promise.all([alice, bob].map(({ page }) => page.locator("#status[data-state=online]").waitFor({ timeout: 20_000 })));
}

/** The handshakes a page sent since `from` (an index into its handshakes): each resumed general from `seq`. */
function expectResumedFrom(p: OpenPage, from: number, general: { id: number; seq: number }): void {
  const sent = p.handshakes.slice(from);
  expect(sent.length).toBeGreaterThan(0);
  for (const auth of sent) {
    expect(typeof auth.token).toBe("string");
    expect(auth.since?.[String(general.id)]).toBe(general.seq);
  }
}

/** Requests for history pages (`/messages?…`) a page made since `from`. */
const historyRequests = (p: OpenPage, from: number) => p.requests.slice(from).filter((url) => /\/messages\?/.test(url));
/** Requests for a channel's events over REST (`/events?after=`, the page's fallback for a gap) since `from`. */
const eventRequests = (p: OpenPage, from: number) => p.requests.slice(from).filter((url) => /\/events\?/.test(url));

let alice: OpenPage;
let bob: OpenPage;
let carol: { token: string; user: { id: number } };
let phoneErrors: string[] = [];
/** The ids of the first two messages (backdated by two days and one). */
let firstTwo: number[] = [];

describe("the chat page in Chromium", () => {
  step("alice and bob sign up through #auth; a message alice types appears in bob's page with the exact text", async () => {
    // bob's context ignores the page's CSP, so the markup test below sees what the rendering alone
    // does (alice's keeps the CSP, as a user's browser does).
    [alice, bob] = await Promise.all([openPage(), openPage({ viewport: { width: 1280, height: 800 }, bypassCSP: true })]);
    for (const { page } of [alice, bob]) {
      await page.locator("#auth").waitFor({ state: "visible" });
      expect(await page.locator("#auth-error").count()).toBe(1);
    }
    // Registration errors: the two passwords must agree (checked in the page, nothing is sent), and
    // what the API refuses is shown in its words: the length rules, per field.
    const registrations = alice.requests.length;
    await fillAuth(alice.page, "alice", "register", password, `${password}!`);
    await alice.page.locator("#auth-error", { hasText: "The two passwords differ" }).waitFor();
    expect(alice.requests.slice(registrations).filter((url) => url.includes("/api/auth/"))).toEqual([]);
    const refused = await fetch(`${server.url}/api/auth/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "al", password: "short" }),
    });
    const { error } = (await refused.json()) as { error: { details: { path: string; message: string }[] } };
    const why = Object.fromEntries(error.details.map((d) => [d.path, d.message]));
    expect(why.password).toContain("8 to 128");
    await fillAuth(alice.page, "al", "register", "short");
    await alice.page.locator("#auth-error", { hasText: `Password ${why.password}` }).waitFor();
    expect(await alice.page.locator("#auth-error").textContent()).toContain(`Username ${why.username}`);
    expect(await alice.page.locator("#auth").isVisible()).toBe(true);

    await signIn(alice.page, "alice", "register");
    await signIn(bob.page, "bob", "register");

    // The general channel is listed and open.
    for (const { page } of [alice, bob]) {
      const open = page.locator('#channels li[data-channel-id][aria-current="true"]');
      await open.waitFor();
      expect(await open.count()).toBe(1);
      expect(await open.textContent()).toContain("general");
    }

    // Presence: each page lists both users, online.
    for (const { page } of [alice, bob]) {
      await page.waitForFunction(`document.querySelectorAll('#people li[data-user-id][data-online="true"]').length === 2`);
      expect((await page.locator("#people").textContent()) ?? "").toMatch(/alice[\s\S]*bob|bob[\s\S]*alice/);
    }

    // Typing: bob sees alice typing before she sends.
    const hello = "Hi Bob! The chat page is live: can you see this?";
    await alice.page.locator("#composer textarea[name=content]").pressSequentially("Hi");
    await bob.page.locator("#typing", { hasText: "alice" }).waitFor();
    await send(alice.page, hello, "enter");
    const seen = await waitForContent(bob.page, hello);
    // Cleared as her message arrives, not when the 3 s of "typing…" run out (nor at the next 1 s refresh).
    await bob.page.waitForFunction(`document.querySelector("#typing").textContent === ""`, undefined, { timeout: 500 });
    expect(seen.author).toBe("alice");
    expect(seen.own).toBe(false);
    expect((await waitForContent(alice.page, hello)).own).toBe(true);

    const reply = "Loud and clear, Alice. Typing from the other window.";
    await send(bob.page, reply, "button");
    expect((await waitForContent(alice.page, reply)).author).toBe("bob");

    // Same messages, same ids, in id order, in both pages.
    for (const { page } of [alice, bob]) {
      const shown = await shownMessages(page);
      expect(ids(shown)).toEqual([...ids(shown)].sort((a, b) => a - b));
      expect(shown.map((m) => m.content)).toEqual([hello, reply]);
      expect(await page.locator("#messages li[data-message-id] .time").count()).toBe(2);
    }

    // For the date separators (checked once the pages load history again, after the restarts below):
    // the first message was sent two days ago, the reply yesterday.
    firstTwo = ids(await shownMessages(alice.page));
    await testDb.sql`UPDATE messages SET created_at = created_at - interval '2 days' WHERE id = ${firstTwo[0]!}`;
    await testDb.sql`UPDATE messages SET created_at = created_at - interval '1 day' WHERE id = ${firstTwo[1]!}`;
  });

  step("a message carrying markup shows as literal text in both pages and runs nothing", async () => {
    const hostile = `look: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script> <b>bold?</b>`;
    await send(alice.page, hostile);
    await waitForContent(bob.page, hostile);
    for (const { page } of [alice, bob]) {
      // Give a would-be <img> time to fail loading and fire its onerror.
      await page.evaluate("new Promise((resolve) => setTimeout(resolve, 300))");
      const shown = await shownMessages(page);
      expect(shown.find((m) => m.content === hostile)).toBeDefined();
      expect(await page.evaluate("window.__xss")).toBeUndefined();
      expect(await page.evaluate("window.__cspViolations")).toEqual([]);
      expect(await page.locator("#messages img, #messages script, #messages b").count()).toBe(0);
    }
  });

  step("alice edits and deletes her own message; bob's page shows both", async () => {
    const original = "Lunch at noon?";
    const edited = "Lunch at 12:30 instead?";
    const doomed = "this one was a typo";
    await send(alice.page, original);
    await send(alice.page, doomed);
    const target = await waitForContent(bob.page, original);
    const victim = await waitForContent(bob.page, doomed);
    // bob cannot edit or delete alice's messages.
    expect(await bob.page.locator(`#messages li[data-message-id="${target.id}"] button[data-action]`).count()).toBe(0);

    // The actions show on hover (as a mouse user reaches them).
    const item = alice.page.locator(`#messages li[data-message-id="${target.id}"]`);
    await item.hover();
    await item.locator("button[data-action=edit]").click();
    const editor = item.locator("[name=edit]");
    await editor.fill(edited);
    await editor.press("Enter");
    for (const { page } of [alice, bob]) {
      const shown = await waitForMessages(page, `message ${target.id} edited`, (all) => all.some((m) => m.id === target.id && m.content === edited && m.edited));
      expect(shown.some((m) => m.content === original)).toBe(false);
    }

    const victimItem = alice.page.locator(`#messages li[data-message-id="${victim.id}"]`);
    await victimItem.hover();
    // Delete asks first: dismissed, nothing is deleted; accepted, it is.
    const asked: string[] = [];
    alice.page.once("dialog", (dialog) => void (asked.push(dialog.message()), dialog.dismiss()));
    await victimItem.locator("button[data-action=delete]").click();
    expect(asked).toEqual([expect.stringContaining("Delete this message?")]);
    expect(await alice.page.locator(`#messages li[data-message-id="${victim.id}"][data-deleted="true"]`).count()).toBe(0);
    alice.page.once("dialog", (dialog) => void dialog.accept());
    await victimItem.locator("button[data-action=delete]").click();
    for (const { page } of [alice, bob]) {
      await waitForMessages(page, `message ${victim.id} deleted`, (all) => all.some((m) => m.id === victim.id && m.deleted && !m.content.includes(doomed)));
      expect(await page.locator(`#messages li[data-message-id="${victim.id}"][data-deleted="true"]`).count()).toBe(1);
    }
  });

  step("links are anchors built from the message text; one author's consecutive messages are grouped", async () => {
    const linked = "Spec: https://example.com/docs/a_(b)?x=1&y=2. Not links: javascript:alert(1), <a href=https://evil.example/x>x</a>";
    await send(alice.page, linked);
    const { id } = await waitForContent(bob.page, linked);
    for (const { page } of [alice, bob]) {
      const anchors = await page.$$eval(`#messages li[data-message-id="${id}"] .content a`, (links) =>
        links.map((a) => ({ href: a.getAttribute("href"), text: a.textContent, rel: a.getAttribute("rel"), target: a.getAttribute("target"), attributes: a.getAttributeNames().sort() })),
      );
      // The sentence's full stop stays text; the would-be HTML stays text, its URL becomes an anchor of our own.
      expect(anchors).toEqual([
        { href: "https://example.com/docs/a_(b)?x=1&y=2", text: "https://example.com/docs/a_(b)?x=1&y=2", rel: "noopener noreferrer", target: "_blank", attributes: ["href", "rel", "target"] },
        { href: "https://evil.example/x", text: "https://evil.example/x", rel: "noopener noreferrer", target: "_blank", attributes: ["href", "rel", "target"] },
      ]);
      expect((await shownMessages(page)).find((m) => m.id === id)!.content).toBe(linked);
    }

    // bob answers, then alice sends two in a row: her second shows without her name (grouped), her first with it.
    await send(bob.page, "Noted.");
    await send(alice.page, "Two things:");
    await send(alice.page, "the spec link above is the draft.");
    await waitForContent(bob.page, "the spec link above is the draft.");
    for (const { page } of [alice, bob]) {
      const items = await page.$$eval("#messages li[data-message-id]", (all) =>
        all.slice(-3).map((li) => ({ continued: li.classList.contains("continued"), authorShown: li.ownerDocument.defaultView!.getComputedStyle(li.querySelector(".author")!).display !== "none" })),
      );
      expect(items).toEqual([
        { continued: false, authorShown: true },
        { continued: false, authorShown: true },
        { continued: true, authorShown: false },
      ]);
    }
  });

  step(
    "from the page: create public and private channels, browse and join, members, add a member, leave, a DM from the people list; sidebars follow live, over REST too",
    async () => {
      const a = alice.page;
      const b = bob.page;
      const dialog = a.locator("#create-channel");
      const browse = b.locator("#browse");
      const members = a.locator("#members");

      // A name the API refuses: its reason, in the dialog.
      await a.locator("[data-action=create]").click();
      await dialog.waitFor({ state: "visible" });
      await dialog.locator("input[name=name]").fill("General");
      await dialog.locator("button[value=create]").click();
      await dialog.locator(".error", { hasText: "exists" }).waitFor();
      await dialog.locator("input[name=name]").fill("design");
      await dialog.locator("button[value=create]").click();
      await dialog.waitFor({ state: "hidden" });
      await a.locator('#channels li[aria-current="true"]', { hasText: "#design" }).waitFor();
      expect(await a.locator("#title").textContent()).toBe("#design");
      const designId = Number(await a.locator("#channels li", { hasText: "#design" }).getAttribute("data-channel-id"));

      // bob is not in it, so it is not in his sidebar: he finds it by browsing, and joins.
      expect(await b.locator("#channels li", { hasText: "#design" }).count()).toBe(0);
      await b.locator("[data-action=browse]").click();
      const row = browse.locator("li", { hasText: "#design" });
      await row.waitFor();
      expect(await row.textContent()).toContain("1 member");
      expect(await browse.locator("li", { hasText: "#general" }).locator("button").textContent()).toBe("Open");
      await row.locator("button[data-action=join]").click();
      await browse.waitFor({ state: "hidden" });
      await b.locator('#channels li[aria-current="true"]', { hasText: "#design" }).waitFor();
      await send(b, "Joined #design from the browse list.");
      await waitForContent(a, "Joined #design from the browse list.");

      // The members of the open channel.
      await a.locator("[data-action=members]").click();
      await members.locator("li[data-user-id]").nth(1).waitFor();
      expect(await members.locator("li[data-user-id]").allTextContents()).toEqual(["alice (you)", "bob"]);
      expect(await members.locator(".add-member").isVisible()).toBe(false); // public channels are joined, not added to
      await members.locator("button[value=close]").click();

      // A private channel: bob cannot find it; alice adds him and it shows in his sidebar at once.
      await a.locator("[data-action=create]").click();
      await dialog.locator("input[name=name]").fill("launch-plans");
      await dialog.locator("input[name=kind][value=private]").check();
      await dialog.locator("button[value=create]").click();
      await a.locator('#channels li[aria-current="true"][data-kind="private"]', { hasText: "#launch-plans" }).waitFor();
      await b.locator("[data-action=browse]").click();
      await browse.locator("li", { hasText: "#design" }).waitFor();
      expect(await browse.locator("li", { hasText: "#launch-plans" }).count()).toBe(0);
      await browse.locator("button[value=close]").click();
      await a.locator("[data-action=members]").click();
      await members.locator(".add-member input").fill("nobody-here");
      await members.locator("button[data-action=add-member]").click();
      await members.locator(".error", { hasText: "No user is called nobody-here" }).waitFor();
      await members.locator(".add-member input").fill("bob");
      await members.locator("button[data-action=add-member]").click();
      await members.locator("li[data-user-id]", { hasText: "bob" }).waitFor();
      await members.locator("button[value=close]").click();
      await b.locator('#channels li[data-kind="private"]', { hasText: "#launch-plans" }).waitFor();

      // bob leaves #design from the page (asked first), and general opens; general has no Leave.
      await b.locator("#channels li", { hasText: "#design" }).locator("button").click();
      await b.locator('#channels li[aria-current="true"]', { hasText: "#design" }).waitFor();
      const asked: string[] = [];
      b.once("dialog", (d) => void (asked.push(d.message()), d.accept()));
      await b.locator("[data-action=leave]").click();
      await b.locator("#channels li", { hasText: "#design" }).waitFor({ state: "detached" });
      expect(asked).toEqual([expect.stringContaining("Leave #design?")]);
      await b.locator('#channels li[aria-current="true"]', { hasText: "#general" }).waitFor();
      expect(await b.locator("[data-action=leave]").isVisible()).toBe(false);

      // Another client of bob's (REST, a session of its own) joins and leaves: his page follows live.
      const login = await fetch(`${server.url}/api/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: "bob", password }) });
      const { token } = (await login.json()) as { token: string };
      expect((await call(server.url, token, "POST", `/api/channels/${designId}/join`)).status).toBe(200);
      await b.locator("#channels li", { hasText: "#design" }).waitFor();
      expect((await call(server.url, token, "POST", `/api/channels/${designId}/leave`)).status).toBe(204);
      await b.locator("#channels li", { hasText: "#design" }).waitFor({ state: "detached" });

      // A direct message by clicking a user: listed apart, titled @name.
      await a.locator("#people li[data-user-id]", { hasText: "bob" }).locator("button").click();
      await a.locator('#directs li[aria-current="true"]', { hasText: "@bob" }).waitFor();
      expect(await a.locator("#title").textContent()).toBe("@bob");
      expect(await a.locator("#channels li", { hasText: "bob" }).count()).toBe(0);
      await send(a, "A direct line, just us.");
      const direct = b.locator("#directs li", { hasText: "@alice" });
      await direct.locator(".unread", { hasText: "1" }).waitFor();
      await direct.locator("button").click();
      await waitForContent(b, "A direct line, just us.");
      expect(await b.locator("#title").textContent()).toBe("@alice");
      expect(await b.locator("[data-action=leave]").isVisible()).toBe(false);

      // Back to general for the steps that follow.
      for (const page of [a, b]) {
        await page.locator("#channels li", { hasText: "#general" }).locator("button").click();
        await page.locator('#channels li[aria-current="true"]', { hasText: "#general" }).waitFor();
        await waitForContent(page, "the spec link above is the draft.");
      }
    },
    longTimeout,
  );

  step(
    "server restarted on the same database and port: the pages resume with auth.since and are replayed the messages, the edit and the deletion made meanwhile",
    async () => {
      carol = await registerAt(server.url, "carol", password);
      // Two messages of carol's the pages show before the restart: she edits one and deletes the other meanwhile.
      const [toEdit, toDelete] = await Promise.all(
        ["Standup at 10?", "ignore this, wrong channel"].map(async (content) => {
          const res = await call(server.url, carol.token, "POST", "/api/messages", { content, clientId: crypto.randomUUID() });
          expect(res.status).toBe(201);
          return (await res.json()) as { id: number; content: string };
        }),
      );
      for (const { page } of [alice, bob]) for (const m of [toEdit!, toDelete!]) await waitForContent(page, m.content);
      // Everything the pages were sent is applied: each must resume from exactly general's head.
      const general = await generalHead(carol.token);
      const from = new Map([alice, bob].map((p) => [p, { requests: p.requests.length, handshakes: p.handshakes.length }]));

      const meanwhile = ["Morning both! The deploy finished while you were away.", "Standup moves to 10:30 today."];
      const edited = "Standup at 10:30, see below.";
      await restartWith(async (side) => {
        for (const content of meanwhile) expect((await call(side, carol.token, "POST", "/api/messages", { content, clientId: crypto.randomUUID() })).status).toBe(201);
        expect((await call(side, carol.token, "PATCH", `/api/messages/${toEdit!.id}`, { content: edited })).status).toBe(200);
        expect((await call(side, carol.token, "DELETE", `/api/messages/${toDelete!.id}`)).status).toBe(204);
      });

      for (const p of [alice, bob]) {
        for (const content of meanwhile) expect((await waitForContent(p.page, content)).author).toBe("carol");
        await waitForMessages(p.page, `message ${toEdit!.id} edited`, (all) => all.some((m) => m.id === toEdit!.id && m.content === edited && m.edited));
        await waitForMessages(p.page, `message ${toDelete!.id} deleted`, (all) => all.some((m) => m.id === toDelete!.id && m.deleted && m.content !== toDelete!.content));
        const shown = await shownMessages(p.page);
        expect(ids(shown)).toEqual([...new Set(ids(shown))].sort((a, b) => a - b));
        // The README's recipe: reconnect with `auth.since`; the socket replays, so neither a history page
        // nor the events over REST are read.
        expectResumedFrom(p, from.get(p)!.handshakes, general);
        expect(historyRequests(p, from.get(p)!.requests)).toEqual([]);
        expect(eventRequests(p, from.get(p)!.requests)).toEqual([]);
      }

      // And the reconnected pages are live again.
      const back = "Back online. Did everything arrive?";
      await send(bob.page, back);
      expect((await waitForContent(alice.page, back)).author).toBe("bob");
    },
    longTimeout,
  );

  step(
    "a channel too far behind to replay gets resync: the pages reload general's newest page and continue from its head",
    async () => {
      // The pages have applied every event so far (bob's last message was shown in both).
      const general = await generalHead(carol.token);
      const from = new Map([alice, bob].map((p) => [p, { requests: p.requests.length, handshakes: p.handshakes.length }]));
      const meanwhile = ["Release freeze starts Friday.", "Please hold merges until Monday.", "Thanks for the patience!"];
      // Three events meanwhile, and the restarted server replays at most two per channel: general is resynced.
      await restartWith(
        async (side) => {
          for (const content of meanwhile) expect((await call(side, carol.token, "POST", "/api/messages", { content, clientId: crypto.randomUUID() })).status).toBe(201);
        },
        { RESUME_MAX_EVENTS: "2" },
      );
      for (const p of [alice, bob]) {
        for (const content of meanwhile) expect((await waitForContent(p.page, content)).author).toBe("carol");
        expectResumedFrom(p, from.get(p)!.handshakes, general);
        // resync: the newest page of general, read once; never the old `?after=` catch-up.
        const reloaded = historyRequests(p, from.get(p)!.requests);
        expect(reloaded.length).toBe(1);
        expect(reloaded[0]).toMatch(new RegExp(`/api/channels/${general.id}/messages\\?limit=\\d+$`));
        expect(eventRequests(p, from.get(p)!.requests)).toEqual([]);
      }

      // Continuing from the head: a message and an edit now arrive live, once each.
      const live = "Freeze confirmed for Friday 17:00.";
      const res = await call(server.url, carol.token, "POST", "/api/messages", { content: live, clientId: crypto.randomUUID() });
      expect(res.status).toBe(201);
      const { id } = (await res.json()) as { id: number };
      expect((await call(server.url, carol.token, "PATCH", `/api/messages/${id}`, { content: `${live} (UTC)` })).status).toBe(200);
      for (const p of [alice, bob]) {
        await waitForMessages(p.page, `message ${id} edited`, (all) => all.some((m) => m.id === id && m.content === `${live} (UTC)` && m.edited));
        const shown = await shownMessages(p.page);
        expect(ids(shown)).toEqual([...new Set(ids(shown))].sort((a, b) => a - b));
      }
    },
    longTimeout,
  );

  step(
    "offline: a banner and a disabled send button; a message typed meanwhile is queued, then sent once back with its clientId and stored once",
    async () => {
      const typed = "Typed while the server was down: does it arrive?";
      let clientId = "";
      await restartWith(async () => {
        const a = alice.page;
        await a.locator("#offline").waitFor({ state: "visible" });
        expect(await a.locator("#offline").textContent()).toContain("offline");
        expect(await a.locator("#composer button[type=submit]").isDisabled()).toBe(true);
        const box = a.locator("#composer textarea[name=content]");
        await box.fill(typed);
        await box.press("Enter");
        const queued = a.locator('#pending li[data-state="queued"]', { hasText: typed });
        await queued.waitFor();
        clientId = (await queued.getAttribute("data-client-id")) ?? "";
        expect(clientId).toMatch(/^[0-9a-f-]{36}$/);
        expect(await box.inputValue()).toBe("");
        // Kept for a reload of the tab as well.
        expect(await a.evaluate("sessionStorage.getItem('chat.outbox')")).toContain(clientId);
      });
      for (const { page } of [alice, bob]) {
        await page.locator("#offline").waitFor({ state: "hidden" });
        expect(await page.locator("#composer button[type=submit]").isEnabled()).toBe(true);
        expect((await waitForContent(page, typed)).author).toBe("alice");
      }
      await alice.page.waitForFunction(`document.querySelectorAll("#pending li").length === 0 && sessionStorage.getItem("chat.outbox") === null`);
      // Sent with the clientId it was given offline, and stored exactly once.
      expect(alice.sent.some((payload) => payload.includes('"message"') && payload.includes(clientId))).toBe(true);
      const stored = await testDb.sql`SELECT count(*)::int AS n FROM messages WHERE client_id = ${clientId}`;
      expect(stored[0].n).toBe(1);
      expect((await shownMessages(bob.page)).filter((m) => m.content === typed).length).toBe(1);
    },
    longTimeout,
  );

  step(
    "channels made over REST show up live; after a reload still signed in; date separators mark each day",
    async () => {
      const aliceLogin = await loginAs("alice");
      const bobLogin = await loginAs("bob");
      const random = await rest(aliceLogin.token, "POST", "/api/channels", { name: "random", kind: "public" });
      const releases = await rest(bobLogin.token, "POST", "/api/channels", { name: "releases", kind: "public" });
      await rest(bobLogin.token, "POST", `/api/channels/${random!.id}/join`);
      await rest(aliceLogin.token, "POST", `/api/channels/${releases!.id}/join`);
      const direct = await rest(aliceLogin.token, "POST", `/api/direct/${bobLogin.user.id}`);
      // Unread for alice in #releases and in the direct channel (she is looking at general).
      await rest(bobLogin.token, "POST", "/api/messages", { channelId: releases!.id, content: "v0.9 is tagged: notes welcome" });
      await rest(bobLogin.token, "POST", "/api/messages", { channelId: direct!.id, content: "got a minute after lunch?" });
      // Live, before any reload: both channels are in both sidebars.
      for (const { page } of [alice, bob]) for (const name of ["#random", "#releases"]) await page.locator("#channels li", { hasText: name }).waitFor();
      await alice.page.locator("#channels li", { hasText: "#releases" }).locator(".unread", { hasText: "1" }).waitFor();

      // Still signed in after a reload (or signed in again through the login button).
      for (const [p, username] of [
        [alice, "alice"],
        [bob, "bob"],
      ] as const) {
        await p.page.reload();
        await Promise.race([p.page.locator("#app").waitFor({ state: "visible" }), p.page.locator("#auth").waitFor({ state: "visible" })]);
        if (await p.page.locator("#auth").isVisible()) await signIn(p.page, username, "login");
        await p.page.locator("#status[data-state=online]").waitFor();
        await p.page.locator('#channels li[data-channel-id][aria-current="true"]').waitFor();
        expect(await p.page.locator("#channels li[data-channel-id]").count()).toBeGreaterThanOrEqual(4);
      }
      await send(alice.page, "Perfect. I'll write up the release notes this afternoon.");
      await send(bob.page, "Thanks! Ping me in #releases when they're ready.");
      await waitForContent(alice.page, "Thanks! Ping me in #releases when they're ready.");

      // The first message was sent two days ago, the reply yesterday, the rest today: one separator each.
      for (const { page } of [alice, bob]) {
        const days = await page.$$eval("#messages li[data-day]", (all) => all.map((li) => ({ id: Number(li.getAttribute("data-message-id")), day: li.getAttribute("data-day"), shown: li.ownerDocument.defaultView!.getComputedStyle(li, "::before").content })));
        const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000).toLocaleDateString("en-US", { timeZone: "UTC", weekday: "long", day: "numeric", month: "long", year: "numeric" });
        expect(days.map(({ id, day }) => ({ id, day }))).toEqual([
          { id: firstTwo[0]!, day: twoDaysAgo },
          { id: firstTwo[1]!, day: "Yesterday" },
          { id: expect.any(Number), day: "Today" },
        ]);
        expect(days[2]!.id).toBeGreaterThan(firstTwo[1]!);
        for (const { day, shown } of days) expect(shown).toBe(JSON.stringify(day));
      }
    },
    longTimeout,
  );

  step(
    "search: hits show when; a hit opens its channel at that message; scrolling down reaches the newest; the results clear on a channel change; the box fits",
    async () => {
      const b = bob.page;
      // A channel where the hit is far from the newest page: 60 messages after it.
      const archive = await rest(carol.token, "POST", "/api/channels", { name: "archive", kind: "public" });
      await rest(carol.token, "POST", "/api/messages", { channelId: archive!.id, content: "The zebracorn plan, first draft." });
      const hit = (await (await call(server.url, carol.token, "GET", `/api/channels/${archive!.id}/messages?limit=1`)).json()) as { id: number }[];
      for (let n = 1; n <= 60; n++) await rest(carol.token, "POST", "/api/messages", { channelId: archive!.id, content: `archive filler ${n}` });
      const bobToken = (await loginAs("bob")).token;
      await rest(bobToken, "POST", `/api/channels/${archive!.id}/join`);
      await b.locator("#channels li", { hasText: "#archive" }).waitFor();

      // The box is whole: input and button inside the sidebar, the input wide enough to type in.
      const [sidebar, box, button] = await Promise.all(["#sidebar", "#search input[name=q]", "#search button"].map((selector) => b.locator(selector).boundingBox()));
      expect(box!.x).toBeGreaterThanOrEqual(sidebar!.x);
      expect(box!.width).toBeGreaterThan(120);
      expect(button!.x).toBeGreaterThanOrEqual(box!.x + box!.width);
      expect(button!.x + button!.width).toBeLessThanOrEqual(sidebar!.x + sidebar!.width);

      const search = b.locator("#search input[name=q]");
      await search.fill("release notes");
      await search.press("Enter");
      await b.locator("#search-results li[data-message-id]").first().waitFor();
      expect(await b.locator("#search-results").textContent()).toContain("release notes");
      // Each hit shows when it was sent.
      for (const time of await b.locator("#search-results li[data-message-id] time").all()) expect(await time.getAttribute("datetime")).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(await b.locator("#search-results li[data-message-id] time").count()).toBe(await b.locator("#search-results li[data-message-id]").count());

      await search.fill("zebracorn");
      await search.press("Enter");
      const result = b.locator(`#search-results li[data-message-id="${hit[0]!.id}"]`);
      await result.waitFor();
      expect(await result.textContent()).toContain("#archive");
      await result.click();
      // Its channel, at that message: marked, in view; the newest are not loaded yet.
      await b.locator('#channels li[aria-current="true"]', { hasText: "#archive" }).waitFor();
      const target = b.locator(`#messages li.target[data-message-id="${hit[0]!.id}"]`);
      await target.waitFor();
      const [list, marked] = await Promise.all([b.locator("#messages").boundingBox(), target.boundingBox()]);
      expect(marked!.y).toBeGreaterThanOrEqual(list!.y);
      expect(marked!.y + marked!.height).toBeLessThanOrEqual(list!.y + list!.height);
      expect((await shownMessages(b)).some((m) => m.content === "archive filler 60")).toBe(false);
      expect(await b.locator("#jump").isVisible()).toBe(true);
      // Opened from a hit, the results stay (for the next one).
      expect(await b.locator("#search-results li[data-message-id]").count()).toBeGreaterThan(0);
      // Scrolling down loads the rest, up to the newest.
      await waitForMessages(b, "archive filler 60 after scrolling down", (shown) => {
        void b.evaluate(`document.querySelector("#messages").scrollTop = 1e9`);
        return shown.some((m) => m.content === "archive filler 60");
      });
      const archived = await shownMessages(b);
      expect(archived.filter((m) => m.content.startsWith("archive filler")).length).toBe(60);
      expect(ids(archived)).toEqual([...new Set(ids(archived))].sort((x, y) => x - y));
      await b.locator("#jump").waitFor({ state: "hidden" });

      // Changing channel from the sidebar clears the results (and the box).
      await b.locator("#channels li", { hasText: "#general" }).locator("button").click();
      await b.locator('#channels li[aria-current="true"]', { hasText: "#general" }).waitFor();
      expect(await b.locator("#search-results li").count()).toBe(0);
      expect(await search.inputValue()).toBe("");
    },
    longTimeout,
  );

  step(
    "a phone: login (a wrong password first); the newest message stays in view after sending; search takes less than half the screen; screenshots",
    async () => {
      // A phone: carol signs in through the login button on a 390×844 screen.
      const phone = await openPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
      phoneErrors = phone.errors;
      const p = phone.page;
      // A wrong password is refused in #auth-error, then the right one signs in.
      await p.locator("#auth input[name=username]").fill("carol");
      await p.locator("#auth input[name=password]").fill("not the password");
      await p.locator("#auth button[data-action=login]").click();
      await p.locator("#auth-error", { hasText: /\S/ }).waitFor({ state: "visible" });
      expect(await p.locator("#auth").isVisible()).toBe(true);
      await signIn(p, "carol", "login");
      await p.locator('#channels li[aria-current="true"]', { hasText: "#general" }).waitFor();
      await waitForContent(p, "Thanks! Ping me in #releases when they're ready.");
      // Usable at that width: no sideways scrolling, and the composer is on screen.
      expect(await p.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(390);
      const composer = await p.locator("#composer textarea[name=content]").boundingBox();
      expect(composer).not.toBeNull();
      expect(composer!.x).toBeGreaterThanOrEqual(0);
      expect(composer!.x + composer!.width).toBeLessThanOrEqual(390);
      expect(composer!.y + composer!.height).toBeLessThanOrEqual(844);

      /** The newest message is wholly inside the visible part of the list. */
      const newestInView = async (content: string) => {
        const [list, item] = await Promise.all([p.locator("#messages").boundingBox(), p.locator("#messages li[data-message-id]").last().boundingBox()]);
        expect((await shownMessages(p)).at(-1)!.content).toBe(content);
        expect(item!.y).toBeGreaterThanOrEqual(list!.y - 1);
        expect(item!.y + item!.height).toBeLessThanOrEqual(list!.y + list!.height + 1);
      };
      const fromPhone = "On the train: reading along from my phone. Release notes look good so far.";
      await send(p, fromPhone);
      await newestInView(fromPhone);

      // Search: the form and its results stay under half the screen, and the newest message in view.
      const search = p.locator("#search input[name=q]");
      await search.fill("release");
      await search.press("Enter");
      await p.locator("#search-results li[data-message-id]").first().waitFor();
      const [form, results] = await Promise.all([p.locator("#search").boundingBox(), p.locator("#search-results").boundingBox()]);
      expect(results!.y + results!.height - form!.y).toBeLessThan(844 / 2);
      await newestInView(fromPhone);
      const box = await search.boundingBox();
      expect(box!.x + box!.width).toBeLessThanOrEqual(390);
      await p.locator("#channels li", { hasText: "#general" }).locator("button").click();
      await p.waitForFunction(`document.querySelectorAll("#search-results li").length === 0`);
      await screenshot(p, "browser-phone.png");

      // The README's screenshot: alice on a desktop, a conversation with what the page can show.
      await send(alice.page, "Docs for the release are at https://example.com/docs/release, reviews welcome.");
      await waitForContent(bob.page, "Docs for the release are at https://example.com/docs/release, reviews welcome.");
      // Scrolled to the start of general: the date separators, links, grouping, an edit and a deletion.
      await alice.page.evaluate(`document.querySelector("#messages").scrollTop = 0`);
      await alice.page.evaluate("new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))");
      const aliceShot = await screenshot(alice.page, "browser-alice.png");
      await screenshot(bob.page, "browser-bob.png");
      // Refreshed only on request: a test run leaves the checkout as it was.
      if (process.env.UPDATE_SCREENSHOT === "1") {
        const docsShot = path.join(projectRoot, "docs/screenshot.png");
        await copyFile(aliceShot, docsShot);
        console.log(`updated: ${path.relative(projectRoot, docsShot)} (copy of test-artifacts/browser-alice.png)`);
      }
    },
    longTimeout,
  );

  step("nothing threw inside any page, and no CSP violation happened", async () => {
    expect([...alice.errors, ...bob.errors, ...phoneErrors]).toEqual([]);
    for (const { page } of [alice, bob]) expect(await page.evaluate("window.__cspViolations")).toEqual([]);
  });
});
