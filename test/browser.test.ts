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
// contract (#auth, #status, #me, #channels, #messages, #composer, #typing, #presence, #search);
// REST is used only for what a third party does (carol's messages, edits and deletions, channels being
// created). The server is restarted on the same database and port while both pages stay open: they resume
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
}

/** CONNECT packets (`40{…}` for the main namespace) in an engine.io payload; polling batches them with \x1e. */
function connectPackets(payload: string | Buffer | null): OpenPage["handshakes"] {
  return String(payload ?? "")
    .split("\x1e")
    .filter((packet) => packet.startsWith("40{"))
    .map((packet) => JSON.parse(packet.slice(2)));
}

async function openPage(options: Parameters<Browser["newContext"]>[0] = { viewport: { width: 1280, height: 800 } }): Promise<OpenPage> {
  const context = await browser.newContext(options);
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
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("request", (request) => {
    requests.push(request.url());
    if (request.method() === "POST" && request.url().includes("/socket.io/")) handshakes.push(...connectPackets(request.postData()));
  });
  page.on("websocket", (ws) => ws.on("framesent", ({ payload }) => handshakes.push(...connectPackets(payload))));
  await page.goto(server.url);
  return { page, errors, requests, handshakes };
}

/** Signs in through `#auth` (register or login) and waits for the app to be online as `username`. */
async function signIn(page: Page, username: string, action: "register" | "login") {
  const auth = page.locator("#auth");
  await auth.locator("input[name=username]").fill(username);
  await auth.locator("input[name=password]").fill(password);
  await auth.locator(`button[data-action=${action}]`).click();
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

describe("the chat page in Chromium", () => {
  step("alice and bob sign up through #auth; a message alice types appears in bob's page with the exact text", async () => {
    // bob's context ignores the page's CSP, so the markup test below sees what the rendering alone
    // does (alice's keeps the CSP, as a user's browser does).
    [alice, bob] = await Promise.all([openPage(), openPage({ viewport: { width: 1280, height: 800 }, bypassCSP: true })]);
    for (const { page } of [alice, bob]) {
      await page.locator("#auth").waitFor({ state: "visible" });
      expect(await page.locator("#auth-error").count()).toBe(1);
    }
    await signIn(alice.page, "alice", "register");
    await signIn(bob.page, "bob", "register");

    // The general channel is listed and open.
    for (const { page } of [alice, bob]) {
      const open = page.locator('#channels li[data-channel-id][aria-current="true"]');
      await open.waitFor();
      expect(await open.count()).toBe(1);
      expect(await open.textContent()).toContain("general");
    }

    // Presence: each page lists both users.
    for (const { page } of [alice, bob]) {
      await page.waitForFunction(`document.querySelectorAll("#presence li[data-user-id]").length === 2`);
      expect((await page.locator("#presence").textContent()) ?? "").toMatch(/alice[\s\S]*bob|bob[\s\S]*alice/);
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
    "more channels, login (a wrong password first) and search; screenshots of both users on a desktop and of a phone-width viewport",
    async () => {
      // A little more conversation, and channels besides general for the channel list.
      const [aliceLogin, bobLogin] = await Promise.all(
        ["alice", "bob"].map(async (username) => {
          const res = await fetch(`${server.url}/api/auth/login`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ username, password }),
          });
          expect(res.status).toBe(200);
          return (await res.json()) as { token: string; user: { id: number } };
        }),
      );
      const api = async (token: string, method: string, url: string, body?: unknown) => {
        const res = await fetch(`${server.url}${url}`, {
          method,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        expect(res.status).toBeLessThan(300);
        return res.status === 204 ? undefined : ((await res.json()) as { id: number });
      };
      const random = await api(aliceLogin!.token, "POST", "/api/channels", { name: "random", kind: "public" });
      const releases = await api(bobLogin!.token, "POST", "/api/channels", { name: "releases", kind: "public" });
      await api(bobLogin!.token, "POST", `/api/channels/${random!.id}/join`);
      await api(aliceLogin!.token, "POST", `/api/channels/${releases!.id}/join`);
      const direct = await api(aliceLogin!.token, "POST", `/api/direct/${bobLogin!.user.id}`);
      // Unread for alice in #releases and in the direct channel (she is looking at general).
      await api(bobLogin!.token, "POST", "/api/messages", { channelId: releases!.id, content: "v0.9 is tagged: notes welcome" });
      await api(bobLogin!.token, "POST", "/api/messages", { channelId: direct!.id, content: "got a minute after lunch?" });

      // The pages learn about new channels when loaded again (or live); still signed in after a reload,
      // or signed in again through the login button.
      for (const [p, username] of [
        [alice, "alice"],
        [bob, "bob"],
      ] as const) {
        await p.page.reload();
        await Promise.race([p.page.locator("#app").waitFor({ state: "visible" }), p.page.locator("#auth").waitFor({ state: "visible" })]);
        if (await p.page.locator("#auth").isVisible()) await signIn(p.page, username, "login");
        await p.page.locator("#status[data-state=online]").waitFor();
        await p.page.locator('#channels li[data-channel-id][aria-current="true"]').waitFor();
        expect(await p.page.locator("#channels li[data-channel-id]").count()).toBeGreaterThanOrEqual(3);
      }
      await send(alice.page, "Perfect. I'll write up the release notes this afternoon.");
      await send(bob.page, "Thanks! Ping me in #releases when they're ready.");
      await waitForContent(alice.page, "Thanks! Ping me in #releases when they're ready.");

      const aliceShot = await screenshot(alice.page, "browser-alice.png");
      await screenshot(bob.page, "browser-bob.png");
      // The README's screenshot, refreshed only on request: a test run leaves the checkout as it was.
      if (process.env.UPDATE_SCREENSHOT === "1") {
        const docsShot = path.join(projectRoot, "docs/screenshot.png");
        await copyFile(aliceShot, docsShot);
        console.log(`updated: ${path.relative(projectRoot, docsShot)} (copy of test-artifacts/browser-alice.png)`);
      }

      // A phone: carol signs in through the login button on a 390×844 screen.
      const phone = await openPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
      // A wrong password is refused in #auth-error, then the right one signs in.
      await phone.page.locator("#auth input[name=username]").fill("carol");
      await phone.page.locator("#auth input[name=password]").fill("not the password");
      await phone.page.locator("#auth button[data-action=login]").click();
      await phone.page.locator("#auth-error", { hasText: /\S/ }).waitFor({ state: "visible" });
      expect(await phone.page.locator("#auth").isVisible()).toBe(true);
      await signIn(phone.page, "carol", "login");
      await waitForContent(phone.page, "Thanks! Ping me in #releases when they're ready.");
      // Usable at that width: no sideways scrolling, and the composer is on screen.
      expect(await phone.page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(390);
      const composer = await phone.page.locator("#composer textarea[name=content]").boundingBox();
      expect(composer).not.toBeNull();
      expect(composer!.x).toBeGreaterThanOrEqual(0);
      expect(composer!.x + composer!.width).toBeLessThanOrEqual(390);
      expect(composer!.y + composer!.height).toBeLessThanOrEqual(844);
      await screenshot(phone.page, "browser-phone.png");

      // Search (after the screenshots, which show the conversation rather than results).
      const search = bob.page.locator("#search");
      await search.locator("input[name=q]").fill("release notes");
      await search.locator("input[name=q]").press("Enter");
      await bob.page.locator("#search-results li[data-message-id]").first().waitFor();
      expect(await bob.page.locator("#search-results").textContent()).toContain("release notes");

      // Nothing threw inside any page along the way.
      expect([...alice.errors, ...bob.errors, ...phone.errors]).toEqual([]);
      for (const { page } of [alice, bob, phone]) expect(await page.evaluate("window.__cspViolations")).toEqual([]);
    },
    longTimeout,
  );
});
