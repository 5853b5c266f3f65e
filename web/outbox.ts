// Messages sent but not yet acknowledged, each with the clientId it keeps until the server has it:
// while offline they wait, once back they go out in order, and a resend with the same clientId is
// stored at most once (api.md §3). Kept in sessionStorage, so a reload of the tab loses none.

export interface Outgoing {
  clientId: string;
  channelId: number;
  content: string;
}

const storageKey = "chat.outbox";
let queue: Outgoing[] = JSON.parse(sessionStorage.getItem(storageKey) ?? "[]") as Outgoing[];

const save = () => (queue.length ? sessionStorage.setItem(storageKey, JSON.stringify(queue)) : sessionStorage.removeItem(storageKey));

export const outbox = {
  /** What is still waiting, oldest first (restored after a reload). */
  pending: (): readonly Outgoing[] => queue,
  add(channelId: number, content: string): Outgoing {
    const item = { clientId: crypto.randomUUID(), channelId, content };
    queue.push(item);
    save();
    return item;
  },
  /** Acknowledged (or refused for good): no longer ours to send. */
  done(item: Outgoing): void {
    queue = queue.filter((other) => other.clientId !== item.clientId);
    save();
  },
  /** Signed out: what was waiting belonged to that user. */
  clear(): void {
    queue = [];
    save();
  },
};
