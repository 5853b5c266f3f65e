import type { ChatMessage, HistoryEntry, MessageDeleted, MessageUpdated } from "./messages.schemas.ts";

/**
 * The newest messages of each channel, in memory, for the read everyone makes on opening a
 * channel: `GET /api/messages` without a cursor. Kept exact by the same committed changes that
 * are broadcast (created, updated, deleted, in commit order), so a read after an ack always sees
 * the acked message. Only on a single instance: another instance's writes never pass through
 * here, so with Redis the service reads the database instead (src/app.ts).
 */
export interface RecentMessages {
  /** The newest `limit` entries, newest first, or undefined when they are not all in memory. The same array until the channel changes. */
  newest(channelId: number, limit: number): HistoryEntry[] | undefined;
  /** Loads a channel's newest entries through `read` (newest first, at most `depth`), unless a change raced the read. */
  fill(channelId: number, read: (depth: number) => Promise<HistoryEntry[]>): Promise<HistoryEntry[]>;
  created(message: ChatMessage): void;
  updated(update: MessageUpdated): void;
  deleted(deletion: MessageDeleted): void;
}

interface Cached {
  /** Newest first, at most `depth`. */
  entries: HistoryEntry[];
  /** True when `entries` is the whole channel (it has fewer than `depth` messages). */
  whole: boolean;
  /** Pages handed out, by limit: the same array until the channel changes, never mutated (see jsonOnce). */
  pages: Map<number, HistoryEntry[]>;
}

/**
 * `depth` is the largest page (api.md §4's limit); `maxChannels` bounds memory (at most
 * depth × maxChannels messages), the channels read longest ago leaving first.
 */
export function createRecentMessages({ depth = 200, maxChannels = 100 }: { depth?: number; maxChannels?: number } = {}): RecentMessages {
  const channels = new Map<number, Cached>();
  // For channels being loaded: bumped by every change meanwhile, so a read that overlapped a
  // change is answered but not kept (the cache would miss the change for good).
  const loading = new Map<number, { version: number; reads: number }>();
  const bump = (channelId: number) => {
    const state = loading.get(channelId);
    if (state) state.version++;
  };

  function replace(channelId: number, id: number, entry: (old: HistoryEntry) => HistoryEntry): void {
    bump(channelId);
    const cached = channels.get(channelId);
    const at = cached?.entries.findIndex((e) => e.id === id) ?? -1;
    if (cached && at >= 0) {
      cached.entries[at] = entry(cached.entries[at]!);
      cached.pages.clear();
    }
  }

  return {
    newest(channelId, limit) {
      const cached = channels.get(channelId);
      if (!cached || (cached.entries.length < limit && !cached.whole)) return undefined;
      // Most recently read last, so the least recently read channel is the first to go.
      channels.delete(channelId);
      channels.set(channelId, cached);
      let page = cached.pages.get(limit);
      if (!page) cached.pages.set(limit, (page = cached.entries.slice(0, limit)));
      return page;
    },

    async fill(channelId, read) {
      let state = loading.get(channelId);
      if (!state) loading.set(channelId, (state = { version: 0, reads: 0 }));
      state.reads++;
      const version = state.version;
      let entries: HistoryEntry[];
      try {
        entries = await read(depth);
      } finally {
        if (--state.reads === 0) loading.delete(channelId);
      }
      if (state.version === version) {
        // The least recently read channel out first when full (Map order is insertion order).
        if (channels.size >= maxChannels && !channels.has(channelId)) channels.delete(channels.keys().next().value!);
        channels.set(channelId, { entries: [...entries], whole: entries.length < depth, pages: new Map() });
      }
      return entries;
    },

    created(message) {
      bump(message.channelId);
      const cached = channels.get(message.channelId);
      if (!cached) return;
      // A load can have read a message committed but not yet delivered (the sequencer holds it
      // for an earlier event of its channel): it is in front already.
      if ((cached.entries[0]?.id ?? 0) >= message.id) return;
      // Published in id order per channel, so the newest goes in front.
      cached.entries.unshift(message);
      cached.pages.clear();
      if (cached.entries.length > depth) {
        cached.entries.length = depth;
        cached.whole = false;
      }
    },

    updated(update) {
      replace(update.channelId, update.id, (old) => ({ ...(old as ChatMessage), content: update.content, editedAt: update.editedAt }));
    },

    deleted(deletion) {
      replace(deletion.channelId, deletion.id, () => ({ id: deletion.id, deleted: true }));
    },
  };
}
