// Getting somewhere new: creating a channel, browsing and joining public ones, a channel's members
// (and adding one to a private channel), and the people list that starts a direct message. Each is
// a REST call; the sidebar then follows from `channel:joined` / `channel:left` (and from the answer
// itself, so a page that missed the event still shows it).
import type { Channel } from "../src/client.ts";
import { api, ApiError, explain, type User } from "./api.ts";
import { $, el } from "./dom.ts";

/** What the panels need of the page. */
export interface PanelHost {
  me(): number | undefined;
  openId(): number | undefined;
  channel(id: number): Channel | undefined;
  users(): readonly User[];
  isOnline(userId: number): boolean;
  /** Lists the channels again, then opens `id`. */
  openListed(id: number): Promise<void>;
  report(error: unknown): void;
}

interface PublicChannel {
  id: number;
  name: string;
  createdAt: string;
  members: number;
  joined: boolean;
}

const showError = (dialog: HTMLDialogElement, error: unknown) => {
  const box = dialog.querySelector(".error")!;
  box.replaceChildren(...explain(error).map((line) => el("span", "", line)));
};
const clearError = (dialog: HTMLDialogElement) => dialog.querySelector(".error")!.replaceChildren();

/** A user's entry in a list: their name, online or not, and a click that opens a DM (not for oneself). */
function personItem(host: PanelHost, user: User): HTMLLIElement {
  const li = el("li", "person");
  li.dataset.userId = String(user.id);
  li.dataset.online = String(host.isOnline(user.id));
  const name = el("button", "name", user.id === host.me() ? `${user.username} (you)` : user.username);
  name.type = "button";
  name.disabled = user.id === host.me();
  name.title = user.id === host.me() ? "" : `Message ${user.username}`;
  li.append(name);
  return li;
}

/** The direct channel with a user (created on first use), listed and opened. */
async function openDirect(host: PanelHost, userId: number): Promise<void> {
  const channel = await api<Channel>(`/api/direct/${userId}`, { method: "POST" });
  await host.openListed(channel.id);
}

/** A click on `li[data-user-id] button` in `list` starts a DM with that user. */
function directOnClick(host: PanelHost, list: HTMLElement, after: () => void = () => {}): void {
  list.addEventListener("click", (event) => {
    const li = (event.target as Element).closest<HTMLElement>("li[data-user-id]");
    if (!li || (event.target as Element).closest("button")?.disabled !== false) return;
    const userId = Number(li.dataset.userId);
    if (userId === host.me()) return;
    after();
    void openDirect(host, userId).catch(host.report);
  });
}

export function panels(host: PanelHost) {
  const createDialog = $<HTMLDialogElement>("#create-channel");
  const browseDialog = $<HTMLDialogElement>("#browse");
  const membersDialog = $<HTMLDialogElement>("#members");
  const createForm = createDialog.querySelector("form")!;

  // ---- creating a channel: public or private; the API's reasons for refusing shown in the dialog.
  $("[data-action=create]").addEventListener("click", () => {
    createForm.reset();
    clearError(createDialog);
    createDialog.showModal();
  });
  createForm.addEventListener("submit", async (event) => {
    if ((event.submitter as HTMLButtonElement | null)?.value !== "create") return; // Cancel: the dialog closes
    event.preventDefault();
    const data = new FormData(createForm);
    try {
      const channel = await api<Channel>("/api/channels", { method: "POST", body: JSON.stringify({ name: String(data.get("name") ?? ""), kind: data.get("kind") }) });
      createDialog.close();
      await host.openListed(channel.id);
    } catch (error) {
      showError(createDialog, error);
    }
  });

  // ---- browsing public channels: join one, or open one already joined.
  const browseList = browseDialog.querySelector(".listing")!;
  $("[data-action=browse]").addEventListener("click", async () => {
    clearError(browseDialog);
    browseList.replaceChildren(el("li", "empty", "Loading…"));
    browseDialog.showModal();
    try {
      const listed = await api<PublicChannel[]>("/api/channels/public?limit=1000");
      browseList.replaceChildren(...listed.map(browseItem));
    } catch (error) {
      browseList.replaceChildren();
      showError(browseDialog, error);
    }
  });
  function browseItem(channel: PublicChannel): HTMLLIElement {
    const li = el("li");
    li.dataset.channelId = String(channel.id);
    const button = el("button", channel.joined ? "secondary" : "", channel.joined ? "Open" : "Join");
    button.type = "button";
    button.dataset.action = channel.joined ? "open" : "join";
    li.append(el("span", "name", `#${channel.name}`), el("span", "count", `${channel.members} ${channel.members === 1 ? "member" : "members"}`), button);
    return li;
  }
  browseList.addEventListener("click", async (event) => {
    const button = (event.target as Element).closest<HTMLButtonElement>("button[data-action]");
    const id = Number(button?.closest<HTMLElement>("li")?.dataset.channelId);
    if (!button || !id) return;
    button.disabled = true;
    try {
      if (button.dataset.action === "join") await api(`/api/channels/${id}/join`, { method: "POST" });
      browseDialog.close();
      await host.openListed(id);
    } catch (error) {
      button.disabled = false;
      showError(browseDialog, error);
    }
  });

  // ---- the open channel's members; in a private channel, adding one (its creator, moderators, admins).
  const memberList = membersDialog.querySelector<HTMLElement>(".listing")!;
  const addBox = membersDialog.querySelector<HTMLElement>(".add-member")!;
  const addInput = addBox.querySelector("input")!;
  async function showMembers(): Promise<void> {
    const id = host.openId();
    if (id === undefined) return;
    const members = await api<User[]>(`/api/channels/${id}/members?limit=1000`);
    if (host.openId() !== id) return;
    memberList.replaceChildren(...members.map((user) => personItem(host, user)));
  }
  $("[data-action=members]").addEventListener("click", async () => {
    const channel = host.channel(host.openId() ?? -1);
    if (!channel) return;
    membersDialog.querySelector("h2")!.textContent = `Members of ${channel.kind === "direct" ? "@" : "#"}${channel.name}`;
    addBox.hidden = channel.kind !== "private";
    addInput.value = "";
    $("#usernames").replaceChildren(...host.users().map((user) => Object.assign(el("option"), { value: user.username })));
    clearError(membersDialog);
    memberList.replaceChildren();
    membersDialog.showModal();
    await showMembers().catch((error) => showError(membersDialog, error));
  });
  const addMember = async () => {
    const id = host.openId();
    const wanted = addInput.value.trim().normalize("NFC").toLowerCase();
    const user = host.users().find((u) => u.username.toLowerCase() === wanted);
    clearError(membersDialog);
    if (id === undefined || !wanted) return;
    if (!user) return showError(membersDialog, new ApiError(404, "NOT_FOUND", `No user is called ${addInput.value.trim()}`));
    try {
      await api(`/api/channels/${id}/members`, { method: "POST", body: JSON.stringify({ userId: user.id }) });
      addInput.value = "";
      await showMembers();
    } catch (error) {
      showError(membersDialog, error);
    }
  };
  membersDialog.querySelector("[data-action=add-member]")!.addEventListener("click", () => void addMember());
  addInput.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    void addMember();
  });
  directOnClick(host, memberList, () => membersDialog.close());

  // ---- everyone, online first: a click opens the direct channel with them.
  const people = $("#people");
  directOnClick(host, people);
  return {
    renderPeople(): void {
      const sorted = [...host.users()].sort((a, b) => Number(host.isOnline(b.id)) - Number(host.isOnline(a.id)) || a.username.localeCompare(b.username));
      people.replaceChildren(...sorted.map((user) => personItem(host, user)));
    },
  };
}
