// The chat page: a client of the public API only (REST for state, Socket.IO for what happens live).
import { io, type Socket } from "socket.io-client";
import type { Channel, ChannelEvent, ChatMessage, ClientToServerEvents, EventsPage, HistoryEntry, SearchHit, ServerToClientEvents } from "../src/client.ts";
import { api, ApiError, accessToken, currentUser, explain, refresh, resume, signOut, whenSignedOut, type User } from "./api.ts";
import { authForm, showErrors } from "./auth-form.ts";
import { $, el, highlightNodes, messageItem, placeMessage, timeElement } from "./dom.ts";
import { outbox, type Outgoing } from "./outbox.ts";
import { panels } from "./panels.ts";

type ChatSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

const pageSize = 50;
/** Messages shown before a search hit opened in its channel (and `pageSize` from it on). */
const contextBefore = 20;
/** general: every user is in it, and it cannot be left (api.md §8). */
const generalId = 1;
const eventsLimit = 1_000;
/** Channels one handshake's `auth.since` may name (api.md §11). */
const maxSinceChannels = 1_000;
const ackTimeoutMs = 5_000;
const typingShownMs = 3_000;
const typingEveryMs = 2_000; // the server relays at most one per RATE_LIMIT_TYPING window anyway

const list = $<HTMLUListElement>("#messages");
const composer = $<HTMLFormElement>("#composer");
const input = composer.querySelector("textarea")!;
const sendButton = composer.querySelector<HTMLButtonElement>("button[type=submit]")!;

let socket: ChatSocket | undefined;
let channels: Channel[] = [];
let openId: number | undefined;
/** The open channel's messages (and tombstones) by id. */
const shown = new Map<number, HistoryEntry>();
let reachedStart = false;
/** The open channel's newest message is shown (false after opening a search hit, until scrolled down to it). */
let reachedEnd = true;
/** The list is scrolled to its end: kept there as messages arrive and the layout changes. */
let atBottom = true;
let loadingOlder = false;
const names = new Map<number, string>();
let users: User[] = [];
const online = new Set<number>();
const typers = new Map<number, number>(); // userId → shown until (ms)
const markedRead = new Map<number, number>();
let lastTypingAt = 0;
/**
 * Per channel, the seq of the last event applied (api.md §11): sent back as `auth.since` on every
 * (re)connection, so the server replays exactly what was missed. Set from GET /api/channels the first
 * time a channel is listed, then moved by each event.
 */
const seqs = new Map<number, number>();
/** Per channel being (re)loaded (its history page, or events over REST): the events that came meanwhile, applied after it. */
const held = new Map<number, ChannelEvent[]>();
const busy = new Map<number, Promise<void>>();
/** Bumped on sign-out, so work started for the previous user does nothing when it ends. */
let epoch = 0;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const describe = (error: unknown) => explain(error).join("; ");
const me = () => currentUser()?.id;
const report = (error: unknown) => console.warn(error);

// ---- signing in and out --------------------------------------------------------------------

authForm(start);

$("[data-action=logout]").addEventListener("click", () => void signOut().then(() => stop("")));
whenSignedOut(stop);

function start(): void {
  $("#me").textContent = currentUser()!.username;
  $("#auth").hidden = true;
  $("#app").hidden = false;
  resume();
  void loadNames().catch(report);
  connect();
  // Sent before a reload and not acknowledged: they go out again with their clientIds.
  for (const item of outbox.pending()) void deliver(item);
}

function stop(reason: string): void {
  socket?.disconnect();
  socket = undefined;
  epoch++;
  outbox.clear();
  wakeSenders();
  openId = undefined;
  channels = [];
  seqs.clear();
  held.clear();
  busy.clear();
  shown.clear();
  online.clear();
  typers.clear();
  list.replaceChildren();
  users = [];
  for (const id of ["#channels", "#directs", "#people", "#search-results", "#pending"]) $(id).replaceChildren();
  $("#app").hidden = true;
  $("#auth").hidden = false;
  showErrors(reason ? [reason] : []);
  setStatus("connecting");
}

// ---- the socket ----------------------------------------------------------------------------

/**
 * Offline: a banner, and the composer's button disabled; what is typed meanwhile is not lost: Enter
 * queues it in the outbox, and it goes out with its clientId once the socket is back.
 */
function setStatus(state: "connecting" | "online" | "offline"): void {
  $("#status").dataset.state = state;
  $("#status").textContent = state;
  $("#offline").hidden = state !== "offline";
  composer.dataset.offline = String(state === "offline");
  sendButton.disabled = state === "offline";
  sendButton.textContent = state === "offline" ? "Offline" : "Send";
}

/** Senders waiting for the socket to be connected again (or for sign-out). */
let waitingSenders: (() => void)[] = [];
const connectedAgain = () => new Promise<void>((resolve) => waitingSenders.push(resolve));
function wakeSenders(): void {
  const waiting = waitingSenders;
  waitingSenders = [];
  for (const wake of waiting) wake();
}

/** `auth.since`: the open channel first, then the others, up to what one handshake may name. */
function since(): Record<string, number> {
  const ids = [...seqs.keys()].sort((a, b) => Number(b === openId) - Number(a === openId)).slice(0, maxSinceChannels);
  return Object.fromEntries(ids.map((id) => [String(id), seqs.get(id)!]));
}

function connect(): void {
  // A function: socket.io-client calls it on every (re)connection attempt, so each one presents the
  // current access token and the current seqs (README "After a reconnect").
  const s: ChatSocket = io({ auth: (cb) => cb(seqs.size > 0 ? { token: accessToken(), since: since() } : { token: accessToken() }) });
  socket = s;
  let retryMs = 1_000;
  /** After a handshake socket.io-client will not retry by itself (refused, or we were disconnected). */
  const retry = (needsRefresh: boolean) => {
    const wait = retryMs * (0.5 + Math.random());
    retryMs = Math.min(retryMs * 2, 30_000);
    const again = () => socket === s && s.connect();
    if (!needsRefresh) return void setTimeout(again, wait);
    // A refused refresh signs out (stop); a failed one (offline) is retried later.
    refresh().then(again, (error) => error instanceof ApiError && error.status < 500 ? undefined : setTimeout(() => retry(true), wait));
  };

  s.on("connect", () => {
    retryMs = 1_000;
    setStatus("online");
    wakeSenders();
    void loadPresence();
    void connected().catch(report);
  });
  s.on("disconnect", (reason) => {
    setStatus("offline");
    // The server ended this socket (a revoked session, a ban): refresh decides whether to come back.
    if (reason === "io server disconnect") retry(true);
  });
  s.on("connect_error", (error) => {
    setStatus("offline");
    if (s.active) return; // a network failure: socket.io-client keeps reconnecting by itself
    // Should not happen: start over without `since` (the channels are loaded afresh once connected).
    if (error.message.startsWith("Invalid auth.since")) seqs.clear();
    // "Unauthorized": the token expired or was revoked. "Unavailable": the token is fine, the database is not.
    retry(error.message === "Unauthorized");
  });

  // Replayed (after a reconnection) and live events alike, in each channel's seq order.
  s.on("message", (data) => receive({ seq: data.seq, type: "message", data }));
  s.on("message:updated", (data) => receive({ seq: data.seq, type: "message:updated", data }));
  s.on("message:deleted", (data) => receive({ seq: data.seq, type: "message:deleted", data }));
  s.on("resync", ({ channelId, head }) => void whileHeld(channelId, () => reload(channelId, head)).catch(report));
  s.on("channel:read", () => void loadChannels().catch(report)); // another tab read something
  // Membership changed (here, in another tab, over REST): the sidebar follows.
  s.on("channel:joined", () => void loadChannels().catch(report));
  s.on("channel:left", ({ channelId }) => dropChannel(channelId));
  s.on("typing", ({ channelId, userId }) => {
    if (channelId !== openId) return;
    typers.set(userId, Date.now() + typingShownMs);
    renderTyping();
  });
  s.on("presence", ({ userId, status }) => {
    status === "online" ? online.add(userId) : online.delete(userId);
    renderPresence();
  });
}

// ---- channel events (api.md §11) -----------------------------------------------------------

/** One event, live or replayed: applied once, in seq order; a channel being loaded holds it until then. */
function receive(event: ChannelEvent): void {
  const channelId = event.data.channelId;
  const waiting = held.get(channelId);
  if (waiting) return void waiting.push(event);
  const last = seqs.get(channelId);
  if (last === undefined) {
    // A channel not listed yet (we were just added to it): list it, which gives its seq, then apply.
    held.set(channelId, [event]);
    return void whileHeld(channelId, () => listChannel(channelId)).catch(report);
  }
  if (event.seq <= last) return; // had it already (replayed after a reconnection, or listed)
  if (event.seq > last + 1) {
    // A gap: the server never leaves one, but should it, read the missing events over REST.
    held.set(channelId, [event]);
    return void whileHeld(channelId, () => fillGap(channelId)).catch(report);
  }
  seqs.set(channelId, event.seq);
  apply(event);
}

/**
 * Runs `task` for one channel, one task at a time, while its events are held; then applies those in
 * seq order (each against the seq the task left). A task that failed is tried again shortly, unless
 * the channel is no longer ours (403, 404): then its held events are dropped.
 */
function whileHeld(channelId: number, task: () => Promise<void>): Promise<void> {
  const started = epoch;
  if (!held.has(channelId)) held.set(channelId, []);
  const run = async () => {
    while (epoch === started) {
      try {
        return await task();
      } catch (error) {
        report(error);
        if (error instanceof ApiError && (error.status === 403 || error.status === 404)) return void held.set(channelId, []);
        await sleep(2_000);
      }
    }
  };
  const done: Promise<void> = (busy.get(channelId) ?? Promise.resolve()).then(run).finally(() => {
    if (epoch !== started || busy.get(channelId) !== done) return; // signed out, or another task queued: it releases
    busy.delete(channelId);
    const waiting = held.get(channelId) ?? [];
    held.delete(channelId);
    for (const event of waiting.sort((a, b) => a.seq - b.seq)) receive(event);
  });
  busy.set(channelId, done);
  return done;
}

/** The events after the last one applied, over REST, until the channel's head. */
async function fillGap(channelId: number): Promise<void> {
  for (;;) {
    const after = seqs.get(channelId) ?? 0;
    const page = await api<EventsPage>(`/api/channels/${channelId}/events?after=${after}&limit=${eventsLimit}`);
    if (page.limited) return reload(channelId, page.head);
    for (const event of page.events) {
      if (event.seq !== seqs.get(channelId)! + 1) continue;
      seqs.set(channelId, event.seq);
      apply(event);
    }
    if (page.events.length === 0 || seqs.get(channelId)! >= page.head) return;
  }
}

/** Lists the channels; a channel still not among them is not ours (any more): its held events are dropped. */
async function listChannel(channelId: number): Promise<void> {
  await loadChannels();
  if (!seqs.has(channelId)) held.set(channelId, []);
}

/** `resync` (or `limited`): the events are not replayable, so the channel is loaded afresh as of `head`. */
async function reload(channelId: number, head: number): Promise<void> {
  seqs.set(channelId, head);
  if (channelId === openId) await showLatest(channelId);
  else await loadChannels(); // its unread count
}

/**
 * What one event changes. Each is safe to apply again over a newer state (events held while a
 * history page loaded meet that page): a message already shown stays as it is, an edit older than
 * the one shown is skipped, a deletion is final.
 */
function apply(event: ChannelEvent): void {
  const { data } = event;
  if (data.channelId !== openId) return countUnread(event);
  if (event.type === "message") {
    names.set(event.data.userId, event.data.username);
    // Looking at older messages (a search hit): the newest are read when scrolled down to.
    if (reachedEnd && !shown.has(data.id)) render(event.data);
    // The message they were typing has arrived: no longer "typing…".
    if (typers.delete(event.data.userId)) renderTyping();
    markReadSoon();
  } else if (event.type === "message:updated") {
    const old = shown.get(data.id);
    const { content, editedAt } = event.data;
    if (old && !("deleted" in old) && Date.parse(editedAt) >= Date.parse(old.editedAt ?? "0")) render({ ...old, content, editedAt });
  } else if (shown.has(data.id)) render({ id: data.id, deleted: true }, true);
}

/** Another channel: its unread count, which GET /api/channels gave as of the channel's `seq`. */
function countUnread(event: ChannelEvent): void {
  const channel = channels.find((c) => c.id === event.data.channelId);
  if (!channel || event.seq <= channel.seq) return;
  channel.seq = event.seq;
  if (event.type === "message" && event.data.userId !== me()) channel.unread++;
  if (event.type === "message:deleted") return void loadChannels().catch(report); // it may have been unread
  renderChannels();
}

// ---- channels and history ------------------------------------------------------------------

/**
 * The channel list with unread counts. A channel listed for the first time starts from its `seq`;
 * a list older than what events have since counted (an answer overtaken by them) keeps their count.
 */
async function loadChannels(): Promise<void> {
  const started = epoch;
  const listed = await api<Channel[]>("/api/channels");
  if (epoch !== started) return;
  // Left meanwhile (another tab, REST, while offline): not resumed, not shown.
  for (const id of [...seqs.keys()]) if (!listed.some((c) => c.id === id) && !held.has(id)) seqs.delete(id);
  channels = listed.map((c) => {
    if (!seqs.has(c.id)) seqs.set(c.id, c.seq);
    const counted = channels.find((old) => old.id === c.id);
    return counted && counted.seq > c.seq ? { ...c, seq: counted.seq, unread: counted.unread } : c;
  });
  renderChannels();
  if (openId !== undefined && !channels.some((c) => c.id === openId)) void openChannel(generalId).catch(report);
}

/** A channel left (here or elsewhere): off the list, not resumed; general opens if it was open. */
function dropChannel(channelId: number): void {
  channels = channels.filter((c) => c.id !== channelId);
  seqs.delete(channelId);
  markedRead.delete(channelId);
  renderChannels();
  if (openId === channelId) void openChannel(generalId).catch(report);
}

/** `#name` for channels, `@name` for a direct channel (named after the other user). */
const channelLabel = (c: Channel) => `${c.kind === "direct" ? "@" : "#"}${c.name}`;

/** Channels (public and private) and direct messages, listed apart. */
function renderChannels(): void {
  const item = (c: Channel) => {
    const li = el("li");
    li.dataset.channelId = String(c.id);
    li.dataset.kind = c.kind;
    if (c.id === openId) li.setAttribute("aria-current", "true");
    const badge = el("span", "unread", c.unread > 0 ? String(c.unread) : "");
    badge.hidden = c.unread === 0;
    const name = el("button", "name", channelLabel(c));
    name.type = "button";
    li.append(name);
    if (c.kind === "private") li.append(el("span", "kind", "private"));
    li.append(badge);
    return li;
  };
  $("#channels").replaceChildren(...channels.filter((c) => c.kind !== "direct").map(item));
  $("#directs").replaceChildren(...channels.filter((c) => c.kind === "direct").map(item));
  renderHeader();
}

function renderHeader(): void {
  const open = channels.find((c) => c.id === openId);
  $("#title").textContent = open ? channelLabel(open) : "";
  $("#title").dataset.kind = open?.kind ?? "";
  $("[data-action=leave]").hidden = !open || open.id === generalId || open.kind === "direct";
}

for (const sidebarList of ["#channels", "#directs"]) {
  $(sidebarList).addEventListener("click", (event) => {
    const li = (event.target as Element).closest<HTMLElement>("li[data-channel-id]");
    if (li) void openChannel(Number(li.dataset.channelId)).catch(report);
  });
}

$("[data-action=leave]").addEventListener("click", async () => {
  const open = channels.find((c) => c.id === openId);
  if (!open || !confirm(`Leave ${channelLabel(open)}? You stop receiving its messages.`)) return;
  try {
    await api(`/api/channels/${open.id}/leave`, { method: "POST" });
    dropChannel(open.id);
  } catch (error) {
    alert(describe(error));
  }
});

/** After a create, a join or a DM: the list as the server has it now, then that channel. */
async function openListed(id: number): Promise<void> {
  await loadChannels();
  await openChannel(id);
}

/**
 * Connected, the first time or again. Again, the open channel's missed events are being replayed
 * (`auth.since`): only the channel list (unread counts, channels added meanwhile) is loaded. The first
 * time: the list, which gives each channel's seq, then general's newest page.
 */
async function connected(): Promise<void> {
  const resumed = openId !== undefined && seqs.has(openId);
  await loadChannels();
  if (resumed && channels.some((c) => c.id === openId)) return;
  const first = channels.find((c) => c.id === openId) ?? channels.find((c) => c.id === generalId) ?? channels[0];
  if (first) await openChannel(first.id);
}

/**
 * Opens a channel at its newest page, or (`at`, a search hit) around one message. Opened from the
 * sidebar, the search results are cleared; opened from a hit, they stay, for the next hit.
 */
async function openChannel(id: number, at?: number): Promise<void> {
  openId = id;
  shown.clear();
  list.replaceChildren();
  typers.clear();
  renderTyping();
  reachedStart = false;
  if (at === undefined) clearSearch();
  renderChannels();
  // Its events wait for the page: it shows at least what they had done before it was read.
  await whileHeld(id, () => (at === undefined ? showLatest(id) : showAround(id, at)));
}

const history = (id: number, query: string) => api<HistoryEntry[]>(`/api/channels/${id}/messages?${query}`);

/** The open channel from its newest page (opened, or `resync`): what was shown before is dropped. */
async function showLatest(id: number): Promise<void> {
  const page = await history(id, `limit=${pageSize}`);
  if (openId !== id) return;
  shown.clear();
  list.replaceChildren();
  reachedStart = page.length < pageSize;
  setReachedEnd(true);
  for (const entry of page.reverse()) render(entry);
  scrollToEnd();
  markRead();
}

/** A search hit in its channel: a few messages before it, a page from it on, the hit centred and marked. */
async function showAround(id: number, messageId: number): Promise<void> {
  const [older, newer] = await Promise.all([history(id, `before=${messageId + 1}&limit=${contextBefore}`), history(id, `after=${messageId}&limit=${pageSize}`)]);
  if (openId !== id) return;
  shown.clear();
  list.replaceChildren();
  reachedStart = older.length < contextBefore;
  setReachedEnd(newer.length < pageSize);
  for (const entry of [...older.reverse(), ...newer]) render(entry);
  const target = list.querySelector<HTMLElement>(`li[data-message-id="${messageId}"]`);
  target?.classList.add("target");
  target?.scrollIntoView({ block: "center" });
  atBottom = reachedEnd && list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  markRead();
}

function setReachedEnd(value: boolean): void {
  reachedEnd = value;
  $("#jump").hidden = value;
}

function scrollToEnd(): void {
  list.scrollTop = list.scrollHeight;
  atBottom = true;
}

$("#jump").addEventListener("click", () => {
  const id = openId;
  if (id !== undefined) void whileHeld(id, () => showLatest(id)).catch(report);
});

/** Scroll-back: `?before=` the oldest id shown when the list is scrolled to its top. */
list.addEventListener("scroll", async () => {
  const fromEnd = list.scrollHeight - list.scrollTop - list.clientHeight;
  atBottom = fromEnd < 40;
  if (fromEnd < 80 && !reachedEnd && !loadingNewer && openId !== undefined) void loadNewer(openId);
  if (list.scrollTop > 80 || reachedStart || loadingOlder || openId === undefined || shown.size === 0) return;
  const id = openId;
  loadingOlder = true;
  try {
    const page = await history(id, `before=${Math.min(...shown.keys())}&limit=${pageSize}`);
    if (openId !== id) return;
    reachedStart = page.length < pageSize;
    const fromBottom = list.scrollHeight - list.scrollTop;
    for (const entry of page) render(entry);
    list.scrollTop = list.scrollHeight - fromBottom; // keep what the reader was looking at in place
  } catch (error) {
    report(error);
  } finally {
    loadingOlder = false;
  }
});

let loadingNewer = false;
/**
 * Scrolling down towards the newest (after a search hit): `?after=` the newest id shown. Live events
 * are held meanwhile, so one that arrives as the last page loads is shown, not lost between the two.
 */
async function loadNewer(id: number): Promise<void> {
  loadingNewer = true;
  try {
    await whileHeld(id, async () => {
      if (openId !== id || shown.size === 0 || reachedEnd) return;
      const page = await history(id, `after=${Math.max(...shown.keys())}&limit=${pageSize}`);
      if (openId !== id) return;
      for (const entry of page) render(entry);
      if (page.length < pageSize) setReachedEnd(true);
    });
  } finally {
    loadingNewer = false;
  }
}

// The list keeps its end in view when its size changes (the phone's keyboard, search results, the
// pending list above the composer) if it was at its end.
new ResizeObserver(() => atBottom && reachedEnd && scrollToEnd()).observe(list);

/** Adds or replaces one message in id order; a message being edited keeps its editor unless `force`. */
function render(entry: HistoryEntry, force = false): void {
  shown.set(entry.id, entry);
  const existing = list.querySelector<HTMLElement>(`li[data-message-id="${entry.id}"]`);
  if (existing?.querySelector("[name=edit]") && !force) return;
  const li = messageItem(entry, me());
  if (existing) {
    if (existing.classList.contains("target")) li.classList.add("target");
    existing.replaceWith(li);
  } else {
    let before = list.lastElementChild as HTMLElement | null;
    while (before && Number(before.dataset.messageId) > entry.id) before = before.previousElementSibling as HTMLElement | null;
    before ? before.after(li) : list.prepend(li);
  }
  // Its date separator and author grouping, and the next message's, which may now follow it.
  placeMessage(li);
  if (li.nextElementSibling) placeMessage(li.nextElementSibling as HTMLElement);
  if (atBottom && li === list.lastElementChild) scrollToEnd();
}

/** Moves the read marker to the newest message shown, while the page is visible. */
function markRead(): void {
  const id = openId;
  if (id === undefined || document.visibilityState !== "visible" || shown.size === 0) return;
  const newest = Math.max(...shown.keys());
  if ((markedRead.get(id) ?? 0) >= newest) return;
  markedRead.set(id, newest);
  const channel = channels.find((c) => c.id === id);
  if (channel) channel.unread = 0;
  renderChannels();
  api(`/api/channels/${id}/read`, { method: "POST", body: JSON.stringify({ messageId: newest }) }).catch(report);
}
document.addEventListener("visibilitychange", markRead);

let markReadTimer: ReturnType<typeof setTimeout> | undefined;
/** markRead once a burst of messages (a replay after a reconnection) has been shown, not once per message. */
function markReadSoon(): void {
  clearTimeout(markReadTimer);
  markReadTimer = setTimeout(markRead, 200);
}

// ---- sending, editing, deleting ------------------------------------------------------------

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  }
});
input.addEventListener("input", () => {
  if (openId === undefined || Date.now() - lastTypingAt < typingEveryMs) return;
  lastTypingAt = Date.now();
  socket?.emit("typing", { channelId: openId });
});
composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = input.value.trim();
  const channelId = openId;
  if (!content || channelId === undefined) return;
  input.value = "";
  // One's own message is shown at the end of the list: the newest page, kept in view.
  if (!reachedEnd) void whileHeld(channelId, () => showLatest(channelId)).catch(report);
  void deliver(outbox.add(channelId, content)); // its pending line is added at once, so the list's end is measured with it
  scrollToEnd();
});

/**
 * Sends one outbox entry: while offline it waits; connected, it is sent with an ack, and on no
 * answer sent again with the same clientId, so it is stored at most once. Refused for good (too
 * long, not a member), it is shown as not sent and leaves the outbox.
 */
async function deliver(item: Outgoing): Promise<void> {
  const started = epoch;
  const pending = el("li", "", item.content);
  pending.dataset.clientId = item.clientId;
  $("#pending").append(pending);
  for (let unanswered = 0; epoch === started && unanswered < 30; ) {
    if (!socket?.connected) {
      pending.dataset.state = "queued";
      await connectedAgain();
      continue;
    }
    pending.dataset.state = "sending";
    let ack;
    try {
      ack = await socket.timeout(ackTimeoutMs).emitWithAck("message", { channelId: item.channelId, content: item.content, clientId: item.clientId });
    } catch {
      unanswered++;
      await sleep(1_000); // timed out (the connection dropped, or the server is slow): not confirmed, resend
      continue;
    }
    if (epoch !== started) return;
    if (ack.ok) {
      outbox.done(item);
      pending.remove();
      // Shown now, not only once its event arrives; the event then finds it there.
      const message = ack.message;
      if ("channelId" in message && message.channelId === openId && reachedEnd) {
        if (!shown.has(message.id)) render(message);
        scrollToEnd(); // even when its event came first, while the list was not at its end
      }
      return;
    }
    if (ack.error.code !== "UNAVAILABLE" && ack.error.code !== "RATE_LIMITED") return failed(item, pending, ack.error.message);
    await sleep((ack.error.retryAfter ?? 1) * 1_000);
  }
  if (epoch === started) failed(item, pending, "no answer from the server");
}

function failed(item: Outgoing, pending: HTMLElement, why: string): void {
  outbox.done(item);
  pending.dataset.state = "failed";
  pending.prepend(el("strong", "", `Not sent (${why}): `));
  setTimeout(() => pending.remove(), 10_000);
}

list.addEventListener("click", async (event) => {
  const button = (event.target as Element).closest<HTMLElement>("button[data-action]");
  const li = button?.closest<HTMLElement>("li[data-message-id]");
  if (!button || !li) return;
  const id = Number(li.dataset.messageId);
  const entry = shown.get(id);
  if (!entry || "deleted" in entry) return;
  const action = button.dataset.action;
  try {
    if (action === "edit") startEdit(li, entry);
    if (action === "save") await saveEdit(li, entry);
    if (action === "cancel") render(entry, true);
    if (action === "delete") {
      if (!confirm("Delete this message? Everyone in the channel sees it deleted.")) return;
      await api(`/api/messages/${id}`, { method: "DELETE" });
      render({ id, deleted: true }, true);
    }
  } catch (error) {
    alertIn(li, describe(error));
  }
});

function startEdit(li: HTMLElement, entry: ChatMessage): void {
  const box = el("textarea");
  box.name = "edit";
  box.value = entry.content;
  const actions = el("span", "actions");
  for (const action of ["save", "cancel"]) {
    const button = el("button", "link", action);
    button.type = "button";
    button.dataset.action = action;
    actions.append(button);
  }
  li.querySelector(".content")!.replaceWith(box);
  li.querySelector(".actions")!.replaceWith(actions);
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      void saveEdit(li, entry).catch((error) => alertIn(li, describe(error)));
    } else if (event.key === "Escape") render(entry, true);
  });
  box.focus();
}

async function saveEdit(li: HTMLElement, entry: ChatMessage): Promise<void> {
  const content = li.querySelector<HTMLTextAreaElement>("[name=edit]")!.value.trim();
  if (!content) return;
  render(await api<ChatMessage>(`/api/messages/${entry.id}`, { method: "PATCH", body: JSON.stringify({ content }) }), true);
}

function alertIn(li: HTMLElement, text: string): void {
  li.querySelector(".error")?.remove();
  li.append(el("span", "error", text));
}

// ---- presence, typing, search --------------------------------------------------------------

let loadingNames: Promise<void> | undefined;
const askedFor = new Set<number>();
/** Usernames for presence and typing: the first 1000 users, fetched again when someone new shows up. */
function loadNames(): Promise<void> {
  loadingNames ??= api<User[]>("/api/users?limit=1000")
    .then((listed) => {
      users = listed;
      for (const user of listed) names.set(user.id, user.username);
      renderPresence();
    })
    .finally(() => (loadingNames = undefined));
  return loadingNames;
}

/** A user's name, or "user <id>" while it is fetched (once per id, so an unknown id cannot loop). */
function nameOf(id: number): string {
  const name = names.get(id);
  if (name) return name;
  if (!askedFor.has(id)) {
    askedFor.add(id);
    void loadNames().catch(report);
  }
  return `user ${id}`;
}

async function loadPresence(): Promise<void> {
  const ids = await api<number[]>("/api/presence").catch(() => [] as number[]);
  online.clear();
  for (const id of ids) online.add(id);
  renderPresence();
}

/** The people list, online first. Someone online the list does not know yet is fetched (nameOf). */
function renderPresence(): void {
  for (const id of online) nameOf(id);
  sidePanels.renderPeople();
}

function renderTyping(): void {
  const now = Date.now();
  for (const [id, until] of typers) if (until < now || id === me()) typers.delete(id);
  const who = [...typers.keys()].map(nameOf);
  $("#typing").textContent = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
}
setInterval(renderTyping, 1_000);

$("#search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = new FormData(event.target as HTMLFormElement).get("q")?.toString().trim();
  const results = $("#search-results");
  if (!q) return clearSearch();
  try {
    const hits = await api<SearchHit[]>(`/api/messages/search?q=${encodeURIComponent(q)}&limit=20`);
    results.replaceChildren(...(hits.length ? hits.map(hitItem) : [el("li", "empty", "No messages found")]));
  } catch (error) {
    results.replaceChildren(el("li", "error", describe(error)));
  }
});

function clearSearch(): void {
  $("#search-results").replaceChildren();
  $<HTMLFormElement>("#search").reset();
}

/** A hit: who, where and when, the highlighted text; a click opens its channel at that message. */
function hitItem({ message, highlight }: SearchHit): HTMLLIElement {
  const li = el("li");
  li.dataset.messageId = String(message.id);
  li.dataset.channelId = String(message.channelId);
  li.tabIndex = 0;
  const where = channels.find((c) => c.id === message.channelId);
  const text = el("div", "content");
  text.append(...highlightNodes(highlight));
  li.append(el("span", "author", message.username), el("span", "where", where ? channelLabel(where) : ""), timeElement(message.timestamp, true), text);
  const open = () => void openChannel(message.channelId, message.id).catch(report);
  li.addEventListener("click", open);
  li.addEventListener("keydown", (event) => event.key === "Enter" && open());
  return li;
}

const sidePanels = panels({
  me,
  openId: () => openId,
  channel: (id) => channels.find((c) => c.id === id),
  users: () => users,
  isOnline: (id) => online.has(id),
  openListed,
  report,
});

if (currentUser()) start();
