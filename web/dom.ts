// Rendering. User content only ever becomes text nodes (textContent, createTextNode): never
// innerHTML, so a message carrying markup shows the markup and runs nothing.
import type { HistoryEntry } from "../src/client.ts";

export const $ = <T extends HTMLElement = HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;

/** An element with a class and text content. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = text;
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

/** `<time>` for an ISO timestamp: the time of day, or (`withDate`) the date as well. */
export function timeElement(iso: string, withDate = false): HTMLTimeElement {
  const time = el("time", "time", (withDate ? dateTimeFormat : timeFormat).format(new Date(iso)));
  time.dateTime = iso;
  time.title = new Date(iso).toLocaleString();
  return time;
}

/** A local calendar day as a heading: "Today", "Yesterday", or the full date. */
export function dayLabel(date: Date, now = new Date()): string {
  const day = (d: Date) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const daysAgo = Math.round((day(now) - day(date)) / 86_400_000);
  return daysAgo === 0 ? "Today" : daysAgo === 1 ? "Yesterday" : dayFormat.format(date);
}

// http(s) URLs up to the next space; punctuation that ends a sentence is not part of them.
const urlPattern = /\bhttps?:\/\/[^\s<>"]+/gi;

/**
 * Message text as nodes: text, and links built from the text (an anchor whose href and text are
 * the URL, opened in a new tab without access to this page). Never HTML from the message.
 */
export function textWithLinks(text: string): Node[] {
  const nodes: Node[] = [];
  let from = 0;
  for (const match of text.matchAll(urlPattern)) {
    let raw = match[0];
    // "(see https://x.org/a)." — trailing punctuation, and a ")" the URL did not open, stay text.
    for (;;) {
      const trimmed = raw.replace(/[.,;:!?'"]+$/, "");
      const unbalanced = trimmed.endsWith(")") && (trimmed.match(/\(/g)?.length ?? 0) < (trimmed.match(/\)/g)?.length ?? 0);
      const next = unbalanced ? trimmed.slice(0, -1) : trimmed;
      if (next === raw) break;
      raw = next;
    }
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    if (match.index > from) nodes.push(document.createTextNode(text.slice(from, match.index)));
    const link = el("a", "", raw);
    link.href = url.href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    nodes.push(link);
    from = match.index + raw.length;
  }
  if (from < text.length) nodes.push(document.createTextNode(text.slice(from)));
  return nodes;
}

/** One `li[data-message-id]` of #messages: author, text, time, and edit/delete for one's own. */
export function messageItem(entry: HistoryEntry, myId: number | undefined): HTMLLIElement {
  const li = el("li");
  li.dataset.messageId = String(entry.id);
  if ("deleted" in entry) {
    li.dataset.deleted = "true";
    li.append(el("span", "content", "message deleted"));
    return li;
  }
  li.dataset.userId = String(entry.userId);
  li.dataset.timestamp = entry.timestamp;
  li.append(el("span", "author", entry.username), timeElement(entry.timestamp));
  if (entry.editedAt) li.append(el("span", "edited", "edited"));
  const content = el("div", "content");
  content.append(...textWithLinks(entry.content));
  if (entry.userId === myId) {
    li.classList.add("own");
    const actions = el("span", "actions");
    for (const action of ["edit", "delete"]) {
      const button = el("button", "link", action);
      button.type = "button";
      button.dataset.action = action;
      actions.append(button);
    }
    li.append(actions); // before the text, so they sit on the author's line
  }
  li.append(content);
  return li;
}

/** Messages by one author within this long of the previous one share its heading. */
const groupWithinMs = 5 * 60_000;

/**
 * A message's place among its neighbours: `data-day` (shown as a date separator) on the first
 * message of each local day, and `continued` when it follows the same author's within a few
 * minutes, so only the first of a run shows the author. Deleted messages carry neither.
 */
export function placeMessage(li: HTMLElement): void {
  const at = li.dataset.timestamp;
  li.classList.remove("continued");
  delete li.dataset.day;
  if (!at) return;
  let previous = li.previousElementSibling as HTMLElement | null;
  const adjacent = previous;
  while (previous && !previous.dataset.timestamp) previous = previous.previousElementSibling as HTMLElement | null;
  const day = dayLabel(new Date(at));
  if (!previous || dayLabel(new Date(previous.dataset.timestamp!)) !== day) {
    li.dataset.day = day;
    return;
  }
  const sameRun = adjacent === previous && previous.dataset.userId === li.dataset.userId && Date.parse(at) - Date.parse(previous.dataset.timestamp!) < groupWithinMs;
  li.classList.toggle("continued", sameRun);
}

const entities: Record<string, string> = { "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&amp;": "&" };

/**
 * A search highlight as nodes. The server sends HTML-escaped text with matches wrapped in
 * <mark>…</mark>; we split on exactly those markers and decode the five escapes it uses, so the
 * text is shown as text and only our own <mark> elements are created.
 */
export function highlightNodes(highlight: string): Node[] {
  let marked = false;
  const nodes: Node[] = [];
  for (const part of highlight.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>" || part === "</mark>") {
      marked = part === "<mark>";
      continue;
    }
    if (!part) continue;
    const text = part.replace(/&(lt|gt|quot|#39|amp);/g, (entity) => entities[entity]!);
    nodes.push(marked ? el("mark", "", text) : document.createTextNode(text));
  }
  return nodes;
}
