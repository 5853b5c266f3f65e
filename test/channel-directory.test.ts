import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { ChatMessage } from "../src/messages/messages.schemas.ts";
import { expectError } from "./helpers/expect-error.ts";
import { apiFor, expectStatus, messagePoster } from "./helpers/http.ts";
import { expectUntilMarker, markerContent } from "./helpers/markers.ts";
import { isMessage, record, type Recorded, type Recorder } from "./helpers/recorder.ts";
import { socketTracker } from "./helpers/sockets.ts";
import { serverEvents } from "../src/realtime/events.ts";
import { startTestServer, uniqueName, type ChatClient, type Json, type Registered } from "./helpers/server.ts";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// What a client needs to show channels beyond its own (docs/api.md §8): the directory of public
// channels (GET /api/channels/public), a channel's members (GET /api/channels/:id/members), both
// paged as GET /api/users is (§2), and the socket events that tell every socket of a user that
// its membership changed (`channel:joined`, `channel:left`). Real HTTP and socket.io-client.

const t = await startTestServer();
const api = apiFor(t);
const postIn = messagePoster(t);
const { connect } = socketTracker(t);
const sql = t.database.sql;

const GENERAL = 1;
const MAX_INT4 = 2_147_483_647;
const isoTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

type Channel = { id: number; name: string; kind: string; createdAt: string; unread: number; seq: number };
type PublicChannel = { id: number; name: string; createdAt: string; members: number; joined: boolean };
type User = Registered["user"];

async function createChannel(owner: Registered, kind: "public" | "private", name = uniqueName(kind)): Promise<Channel> {
  return expectStatus(await api("POST", "/api/channels", owner.token, { name, kind }), 201);
}
const join = async (user: Registered, channelId: number): Promise<Channel> => expectStatus(await api("POST", `/api/channels/${channelId}/join`, user.token), 200);
const leave = async (user: Registered, channelId: number) => expectStatus(await api("POST", `/api/channels/${channelId}/leave`, user.token), 204);
const addMember = async (actor: Registered, channelId: number, userId: number): Promise<Channel> =>
  expectStatus(await api("POST", `/api/channels/${channelId}/members`, actor.token, { userId }), 200);
const direct = async (user: Registered, other: Registered, status: 200 | 201): Promise<Channel> => expectStatus(await api("POST", `/api/direct/${other.user.id}`, user.token), status);

/** A second session of `user` (another device): its own access token. */
async function secondSession(user: Registered): Promise<string> {
  const res = await api("POST", "/api/auth/login", undefined, { username: user.user.username, password: "correct horse battery" });
  return ((await expectStatus(res, 200)) as { token: string }).token;
}

/** A page as the server answered it: the body and its Link header (null when absent). */
async function page<T>(path: string, token: string): Promise<{ items: T[]; link: string | null }> {
  const res = await api("GET", path, token);
  const link = res.headers.get("link");
  return { items: (await expectStatus(res, 200)) as T[], link };
}

/** Every page from `path` on, following each Link; checks each Link names the page's last id and the limit asked for. */
async function walk<T extends { id: number }>(path: string, token: string, limit: number): Promise<{ pages: T[][]; links: (string | null)[] }> {
  const pages: T[][] = [];
  const links: (string | null)[] = [];
  let next: string | null = path;
  while (next !== null) {
    const { items, link } = await page<T>(next, token);
    pages.push(items);
    links.push(link);
    expect(pages.length).toBeLessThan(50);
    if (link === null) break;
    const match = /^<([^>]+)>; rel="next"$/.exec(link);
    expect(match).not.toBeNull();
    next = match![1]!;
    expect(next).toEndWith(`?after=${items.at(-1)!.id}&limit=${limit}`);
  }
  return { pages, links };
}

/** The directory as the database says it should be for `viewer`: every public channel by id. */
async function storedPublic(viewer: Registered, after = 0): Promise<PublicChannel[]> {
  const rows = await sql<{ id: number; name: string; created_at: Date; members: number; joined: boolean }[]>`
    SELECT c.id, c.name, c.created_at,
      (SELECT count(*)::int FROM channel_members m WHERE m.channel_id = c.id) AS members,
      EXISTS (SELECT 1 FROM channel_members m WHERE m.channel_id = c.id AND m.user_id = ${viewer.user.id}) AS joined
    FROM channels c WHERE c.kind = 'public' AND c.id > ${after} ORDER BY c.id`;
  return rows.map((r) => ({ id: r.id, name: r.name, createdAt: new Date(r.created_at).toISOString(), members: r.members, joined: r.joined }));
}

async function entryFor(viewer: Registered, channelId: number): Promise<PublicChannel | undefined> {
  const { items } = await page<PublicChannel>(`/api/channels/public?after=${channelId - 1}&limit=1`, viewer.token);
  return items.find((c) => c.id === channelId);
}

const byId = (users: User[]) => [...users].sort((x, y) => x.id - y.id);

/** Everyone is in general and nobody can leave it: the marker technique's channel (helpers/markers.ts). */
const markerBot = await t.register(uniqueName("marker"));
const expectOnlyMarker = (recorders: Recorder[], before?: Recorded[][]) => expectUntilMarker(() => postIn(markerBot, GENERAL, markerContent()), recorders, before);

const joinedEvent = (channelId: number): Recorded => ["channel:joined", { channelId }];
const leftEvent = (channelId: number): Recorded => ["channel:left", { channelId }];
const isEvent = (name: string, channelId: number) => ([event, payload]: Recorded) => event === name && (payload as { channelId: number }).channelId === channelId;

// ---------------------------------------------------------------------------------------
// GET /api/channels/public

describe("GET /api/channels/public", () => {
  let alice: Registered;
  let bob: Registered;
  let carol: Registered;
  let open: Channel;
  let secret: Channel;
  let dm: Channel;

  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
    open = await createChannel(alice, "public");
    secret = await createChannel(alice, "private");
    dm = await direct(alice, bob, 201);
  });

  test("every public channel by id (general included), each exactly {id, name, createdAt, members, joined}; no private or direct channel", async () => {
    const { items, link } = await page<PublicChannel>("/api/channels/public?limit=1000", carol.token);
    expect(link).toBeNull();
    expect(items).toEqual(await storedPublic(carol));
    for (const entry of items) {
      expect(Object.keys(entry).sort()).toEqual(["createdAt", "id", "joined", "members", "name"]);
      expect(entry.createdAt).toMatch(isoTime);
      expect(Number.isInteger(entry.id) && Number.isInteger(entry.members)).toBe(true);
    }
    const ids = items.map((c) => c.id);
    expect(ids).toEqual([...ids].sort((x, y) => x - y));
    expect(ids).toContain(GENERAL);
    expect(ids).toContain(open.id);
    expect(ids).not.toContain(secret.id);
    expect(ids).not.toContain(dm.id);
    // The direct channel is not listed to either of its users, nor the private one to its creator.
    for (const who of [alice, bob]) {
      const mine = (await page<PublicChannel>("/api/channels/public?limit=1000", who.token)).items.map((c) => c.id);
      expect(mine).not.toContain(dm.id);
      expect(mine).not.toContain(secret.id);
    }
    const [users] = await sql`SELECT count(*)::int AS n FROM users`;
    expect(items.find((c) => c.id === GENERAL)).toEqual({ id: GENERAL, name: "general", createdAt: expect.stringMatching(isoTime), members: (users as { n: number }).n, joined: true });
    expect(items.find((c) => c.id === open.id)).toEqual({ id: open.id, name: open.name, createdAt: open.createdAt, members: 1, joined: false });
  });

  test("members and joined follow joins and leaves, for the caller and for others", async () => {
    expect(await entryFor(alice, open.id)).toMatchObject({ members: 1, joined: true });
    expect(await entryFor(carol, open.id)).toMatchObject({ members: 1, joined: false });
    await join(carol, open.id);
    expect(await entryFor(carol, open.id)).toMatchObject({ members: 2, joined: true });
    expect(await entryFor(bob, open.id)).toMatchObject({ members: 2, joined: false });
    await join(bob, open.id);
    await join(carol, open.id); // a second join changes nothing
    expect(await entryFor(carol, open.id)).toMatchObject({ members: 3, joined: true });
    await leave(carol, open.id);
    expect(await entryFor(carol, open.id)).toMatchObject({ members: 2, joined: false });
    expect(await entryFor(bob, open.id)).toMatchObject({ members: 2, joined: true });
    expect(await entryFor(alice, open.id)).toMatchObject({ members: 2, joined: true });
  });

  test("pages of `limit` after `after`, each but the last with Link </api/channels/public?after=<its last id>&limit=L>; together exactly the directory", async () => {
    const start = (await storedPublic(carol)).at(-1)!.id;
    const made: Channel[] = [];
    for (let i = 0; i < 5; i++) made.push(await createChannel(i % 2 ? alice : bob, "public"));
    // A private channel in between is skipped, not counted.
    await createChannel(alice, "private");
    const { pages, links } = await walk<PublicChannel>(`/api/channels/public?after=${start}&limit=2`, carol.token, 2);
    expect(pages.map((p) => p.map((c) => c.id))).toEqual([
      [made[0]!.id, made[1]!.id],
      [made[2]!.id, made[3]!.id],
      [made[4]!.id],
    ]);
    expect(links).toEqual([`</api/channels/public?after=${made[1]!.id}&limit=2>; rel="next"`, `</api/channels/public?after=${made[3]!.id}&limit=2>; rel="next"`, null]);
    expect(pages.flat()).toEqual(await storedPublic(carol, start));
    // A last page that is exactly full has no Link; past the end is an empty page without one.
    expect(await page(`/api/channels/public?after=${made[2]!.id}&limit=2`, carol.token)).toEqual({ items: await storedPublic(carol, made[2]!.id), link: null });
    expect(await page(`/api/channels/public?after=${made[4]!.id}`, carol.token)).toEqual({ items: [], link: null });
    // The whole directory, page by page from the start, is what the database holds.
    const all = await walk<PublicChannel>("/api/channels/public?limit=3", carol.token, 3);
    expect(all.pages.flat()).toEqual(await storedPublic(carol));
    expect(all.pages.slice(0, -1).every((p) => p.length === 3)).toBe(true);
  });

  test("the default limit is 100", async () => {
    const have = (await storedPublic(carol)).length;
    for (let made = have; made < 101; made += 10) await Promise.all(Array.from({ length: 10 }, () => createChannel(alice, "public")));
    const stored = await storedPublic(carol);
    const { items, link } = await page<PublicChannel>("/api/channels/public", carol.token);
    expect(items).toEqual(stored.slice(0, 100));
    expect(link).toBe(`</api/channels/public?after=${stored[99]!.id}&limit=100>; rel="next"`);
  });
});

// ---------------------------------------------------------------------------------------
// GET /api/channels/:id/members

describe("GET /api/channels/:id/members", () => {
  let alice: Registered;
  let bob: Registered;
  let carol: Registered;
  let dave: Registered;

  beforeAll(async () => {
    [alice, bob, carol, dave] = await Promise.all([t.register(), t.register(), t.register(), t.register()]);
  });

  const members = async (who: Registered, channelId: number, query = "") => page<User>(`/api/channels/${channelId}/members${query}`, who.token);

  test("a private channel's members, by id, each the user shape of GET /api/users, to each of its members", async () => {
    const room = await createChannel(carol, "private");
    await addMember(carol, room.id, alice.user.id);
    await addMember(carol, room.id, bob.user.id);
    const expected = byId([alice.user, bob.user, carol.user]);
    for (const who of [alice, bob, carol]) expect(await members(who, room.id)).toEqual({ items: expected, link: null });
    const users = (await page<User>("/api/users?limit=1000", alice.token)).items;
    expect(expected.map((u) => users.find((x) => x.id === u.id))).toEqual(expected);
    for (const entry of (await members(alice, room.id)).items) expect(Object.keys(entry).sort()).toEqual(["createdAt", "id", "role", "username"]);
  });

  test("a public channel: listed to anyone signed in, members or not; a leave takes the user off the list", async () => {
    const open = await createChannel(bob, "public");
    await join(alice, open.id);
    for (const who of [alice, bob, dave]) expect(await members(who, open.id)).toEqual({ items: byId([alice.user, bob.user]), link: null });
    await leave(alice, open.id);
    expect(await members(dave, open.id)).toEqual({ items: [bob.user], link: null });
    // General: everyone, dave among them, in id order.
    const general = await walk<User>(`/api/channels/${GENERAL}/members?limit=1000`, dave.token, 1000);
    const [users] = await sql`SELECT count(*)::int AS n FROM users`;
    expect(general.pages.flat()).toHaveLength((users as { n: number }).n);
    expect(general.pages.flat()).toContainEqual(dave.user);
  });

  test("private and direct channels: 404 NOT_FOUND to a non-member, the same answer as a channel that does not exist; 200 to a member", async () => {
    const room = await createChannel(alice, "private");
    const dm = await direct(alice, bob, 201);
    const unknown = await expectError(await api("GET", `/api/channels/${MAX_INT4}/members`, dave.token), 404, "NOT_FOUND");
    for (const id of [room.id, dm.id]) {
      const body = await expectError(await api("GET", `/api/channels/${id}/members`, dave.token), 404, "NOT_FOUND");
      expect(body).toEqual(unknown);
    }
    // Moderators and admins are not let in either: the same rule as reading the channel.
    const admin = await t.register();
    await sql`UPDATE users SET role = 'admin' WHERE id = ${admin.user.id}`;
    await expectError(await api("GET", `/api/channels/${room.id}/members`, admin.token), 404, "NOT_FOUND");
    expect(await members(alice, room.id)).toEqual({ items: [alice.user], link: null });
    for (const who of [alice, bob]) expect(await members(who, dm.id)).toEqual({ items: byId([alice.user, bob.user]), link: null });
    await addMember(alice, room.id, dave.user.id);
    expect(await members(dave, room.id)).toEqual({ items: byId([alice.user, dave.user]), link: null });
  });

  test("pages of `limit` after `after`, with Link </api/channels/:id/members?after=<its last id>&limit=L> but on the last", async () => {
    // One at a time, so ids are in this order; `gap` is no member, between members.
    const crowd: Registered[] = [];
    let gap!: Registered;
    for (let i = 0; i < 5; i++) {
      const user = await t.register();
      if (i === 2) gap = user;
      else crowd.push(user);
    }
    const room = await createChannel(alice, "private");
    for (const user of crowd) await addMember(alice, room.id, user.user.id);
    const everyone = byId([alice.user, ...crowd.map((u) => u.user)]);
    const { pages, links } = await walk<User>(`/api/channels/${room.id}/members?limit=2`, alice.token, 2);
    expect(pages).toEqual([everyone.slice(0, 2), everyone.slice(2, 4), everyone.slice(4)]);
    expect(links).toEqual([
      `</api/channels/${room.id}/members?after=${everyone[1]!.id}&limit=2>; rel="next"`,
      `</api/channels/${room.id}/members?after=${everyone[3]!.id}&limit=2>; rel="next"`,
      null,
    ]);
    expect(await members(alice, room.id, `?after=${everyone[0]!.id}&limit=4`)).toEqual({ items: everyone.slice(1), link: null });
    expect(await members(alice, room.id, `?after=${everyone[4]!.id}`)).toEqual({ items: [], link: null });
    // `after` need not be a member's id.
    expect(gap.user.id).toBeGreaterThan(everyone[2]!.id);
    expect(gap.user.id).toBeLessThan(everyone[3]!.id);
    expect(await members(alice, room.id, `?after=${gap.user.id}&limit=1`)).toEqual({
      items: [everyone[3]!],
      link: `</api/channels/${room.id}/members?after=${everyone[3]!.id}&limit=1>; rel="next"`,
    });
  });
});

// ---------------------------------------------------------------------------------------
// Bad input, no token

describe("refusals", () => {
  let alice: Registered;
  let room: Channel;
  beforeAll(async () => {
    alice = await t.register();
    room = await createChannel(alice, "private");
  });

  const badQueries: Array<[query: string, field: string]> = [
    ["limit=0", "limit"],
    ["limit=1001", "limit"],
    ["limit=-1", "limit"],
    ["limit=abc", "limit"],
    ["limit=1.5", "limit"],
    ["limit=", "limit"],
    ["limit=1e3", "limit"],
    ["limit=99999999999", "limit"],
    ["after=-1", "after"],
    ["after=x", "after"],
    ["after=0", "after"],
    ["after=", "after"],
    ["after=2147483648", "after"],
    ["after=99999999999", "after"],
    ["after=1.5", "after"],
  ];
  const lists = [
    ["GET /api/channels/public", () => "/api/channels/public"],
    ["GET /api/channels/:id/members", () => `/api/channels/${room.id}/members`],
  ] as const;
  const queryRows = lists.flatMap(([route, path]) => badQueries.map(([query, field]) => ({ route, path, query, field })));

  test.each(queryRows)("$route?$query → 400 VALIDATION_FAILED naming $field", async ({ path, query, field }) => {
    await expectError(await api("GET", `${path()}?${query}`, alice.token), 400, "VALIDATION_FAILED", field);
  });

  test.each(lists)("%s: both bad → details name both", async (_route, path) => {
    const body = await expectError(await api("GET", `${path()}?limit=0&after=x`, alice.token), 400, "VALIDATION_FAILED");
    expect(body.error.details!.map((d) => d.path).sort()).toEqual(["after", "limit"]);
  });

  // `public` is no id: the directory is not taken for a channel, nor a channel's routes for the directory.
  const badIds = ["abc", "0", "-1", "1.5", "1e3", "2147483648", "99999999999", "public"];
  test.each(badIds)("GET /api/channels/%s/members → 400 VALIDATION_FAILED naming id", async (id) => {
    await expectError(await api("GET", `/api/channels/${id}/members`, alice.token), 400, "VALIDATION_FAILED", "id");
  });

  test.each(["join", "leave", "messages", "read"])("POST or GET /api/channels/public/%s is a bad id, not the directory", async (tail) => {
    const method = tail === "messages" ? "GET" : "POST";
    await expectError(await api(method, `/api/channels/public/${tail}`, alice.token, method === "POST" ? { messageId: 1 } : undefined), 400, "VALIDATION_FAILED", "id");
  });

  test("an unknown channel's members → 404 NOT_FOUND", async () => {
    await expectError(await api("GET", `/api/channels/${MAX_INT4}/members`, alice.token), 404, "NOT_FOUND");
  });

  /** Alice's token with another signature. */
  const forged = () => `${alice.token.split(".").slice(0, 2).join(".")}.${Buffer.from("not the signature").toString("base64url")}`;
  test.each([
    ["/api/channels/public"],
    ["/api/channels/public?limit=0"],
    [`/api/channels/1/members`],
    [`/api/channels/abc/members`],
  ])("%s without a token, or with a forged one → 401 UNAUTHORIZED", async (path) => {
    await expectError(await api("GET", path, undefined), 401, "UNAUTHORIZED");
    await expectError(await api("GET", path, forged()), 401, "UNAUTHORIZED");
  });
});

// ---------------------------------------------------------------------------------------
// channel:joined / channel:left

describe("membership events on the user's sockets", () => {
  let alice: Registered;
  let bob: Registered;
  let carol: Registered;
  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([t.register(), t.register(), t.register()]);
  });

  /** Both transports: two tabs of one user. */
  const tabs = async (user: Registered | string): Promise<ChatClient[]> => [await connect(user, "websocket"), await connect(user, "polling")];

  test("creating a channel: channel:joined {channelId} on every socket of the creator (another session's too), once; nobody else's", async () => {
    const other = await secondSession(alice);
    const mine = [...(await tabs(alice)), await connect(other, "websocket")].map(record);
    const outsiders = (await tabs(bob)).map(record);
    for (const kind of ["public", "private"] as const) {
      const channel = await createChannel(alice, kind);
      for (const r of mine) await r.until(isEvent("channel:joined", channel.id));
    }
    const channels = (await expectStatus(await api("GET", "/api/channels", alice.token), 200)) as Channel[];
    const [pub, priv] = channels.slice(-2);
    expect([pub!.kind, priv!.kind]).toEqual(["public", "private"]);
    await expectOnlyMarker([...mine, ...outsiders], [...mine.map(() => [joinedEvent(pub!.id), joinedEvent(priv!.id)]), [], []]);
  });

  test("joining a public channel over REST: channel:joined on every socket of the user; a second join sends nothing", async () => {
    const open = await createChannel(carol, "public");
    const other = await secondSession(bob);
    const recorders = [...(await tabs(bob)), await connect(other, "polling")].map(record);
    const owner = record(await connect(carol, "websocket"));
    await join(bob, open.id);
    for (const r of recorders) await r.until(isEvent("channel:joined", open.id));
    // Again, with the same token and with the other session's: no change, nothing sent.
    await join(bob, open.id);
    await join({ ...bob, token: other }, open.id);
    const once = [joinedEvent(open.id)];
    await expectOnlyMarker([...recorders, owner], [once, once, once, []]);
  });

  test("leaving: channel:left on every socket of the user, once; after it, the channel's messages no longer arrive", async () => {
    const open = await createChannel(carol, "public");
    await join(bob, open.id);
    const sockets = await tabs(bob);
    const recorders = sockets.map(record);
    await leave(bob, open.id);
    for (const r of recorders) await r.until(isEvent("channel:left", open.id));
    await postIn(carol, open.id, "bob has gone");
    // A second leave is refused (no longer a member): nothing is sent.
    await expectError(await api("POST", `/api/channels/${open.id}/leave`, bob.token), 403, "FORBIDDEN");
    await expectOnlyMarker(recorders, [[leftEvent(open.id)], [leftEvent(open.id)]]);
  });

  test("being added to a private channel: channel:joined on the added user's sockets, not the inviter's; adding again sends nothing", async () => {
    const room = await createChannel(alice, "private");
    const added = (await tabs(carol)).map(record);
    const inviter = (await tabs(alice)).map(record);
    await addMember(alice, room.id, carol.user.id);
    for (const r of added) await r.until(isEvent("channel:joined", room.id));
    await addMember(alice, room.id, carol.user.id);
    await addMember(alice, room.id, alice.user.id);
    const once = [joinedEvent(room.id)];
    await expectOnlyMarker([...added, ...inviter], [once, once, [], []]);
  });

  test("a direct channel: channel:joined on both users' sockets when it is created, and nothing when POST /api/direct is called again from either side", async () => {
    const [x, y] = await Promise.all([t.register(), t.register()]);
    const recorders = [...(await tabs(x)), ...(await tabs(y))].map(record);
    const outsider = record(await connect(carol, "websocket"));
    const dm = await direct(x, y, 201);
    for (const r of recorders) await r.until(isEvent("channel:joined", dm.id));
    await direct(x, y, 200);
    await direct(y, x, 200);
    const once = [joinedEvent(dm.id)];
    await expectOnlyMarker([...recorders, outsider], [once, once, once, once, []]);
  });

  test("a join from another session's token reaches this session's sockets too", async () => {
    const open = await createChannel(carol, "public");
    const phone = await secondSession(alice);
    const laptop = record(await connect(alice, "polling"));
    await join({ ...alice, token: phone }, open.id);
    await laptop.until(isEvent("channel:joined", open.id));
    await expectOnlyMarker([laptop], [[joinedEvent(open.id)]]);
  });

  test.each(["websocket", "polling"] as const)(
    "once channel:joined arrives (%s), the socket is already in the channel's room: a message sent at that moment reaches it",
    async (transport) => {
      const user = await t.register();
      const socket = await connect(user, transport);
      const open = await createChannel(carol, "public");
      const recorder = record(socket);
      // Sent from the event's handler: nothing else can have put the socket into the room first.
      const sent = new Promise<ChatMessage>((resolve, reject) => {
        socket.once("channel:joined", ({ channelId }) => {
          expect(channelId).toBe(open.id);
          postIn(carol, open.id, "right after the event").then(resolve, reject);
        });
      });
      await join(user, open.id);
      const message = await sent;
      expect(await recorder.until(isMessage(message.id))).toEqual([joinedEvent(open.id), ["message", message]]);
      // The socket posts there too, without reconnecting.
      const ack = (await socket.timeout(5_000).emitWithAck("message", { content: "hello", channelId: open.id } as never)) as Json;
      expect(ack).toMatchObject({ ok: true, message: { channelId: open.id } });
    },
  );

  test("the event payloads match the documented schemas exactly", async () => {
    const open = await createChannel(carol, "public");
    const socket = await connect(bob, "websocket");
    const joined = new Promise<unknown>((resolve) => socket.once("channel:joined", resolve));
    const left = new Promise<unknown>((resolve) => socket.once("channel:left", resolve));
    await join(bob, open.id);
    expect(serverEvents["channel:joined"].payload.strict().safeParse(await joined).success).toBe(true);
    await leave(bob, open.id);
    expect(serverEvents["channel:left"].payload.strict().safeParse(await left).success).toBe(true);
    expect(await left).toEqual({ channelId: open.id });
  });
});
