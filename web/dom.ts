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

/** One `li[data-message-id]` of #messages: author, text, time, and edit/delete for one's own. */
export function messageItem(entry: HistoryEntry, myId: number | undefined): HTMLLIElement {
  const li = el("li");
  li.dataset.messageId = String(entry.id);
  if ("deleted" in entry) {
    li.dataset.deleted = "true";
    li.append(el("span", "content", "message deleted"));
    return li;
  }
  const time = el("time", "time", timeFormat.format(new Date(entry.timestamp)));
  time.dateTime = entry.timestamp;
  li.append(el("span", "author", entry.username), time);
  if (entry.editedAt) li.append(el("span", "edited", "edited"));
  const content = el("div", "content", entry.content);
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
