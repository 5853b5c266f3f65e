import { until } from "./helpers/locks.ts";
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { TEST_TIMEOUT_MS } from "./helpers/env.ts";
import { apiFor, expectStatus } from "./helpers/http.ts";
import { startTestServer, uniqueName, type Registered } from "./helpers/server.ts";

// Per file: Bun 1.4 applies a preload's setDefaultTimeout to one test file only.
setDefaultTimeout(TEST_TIMEOUT_MS);

// The user list's pages, cached (src/users/users.service.ts: 1 s TTL, dropped on register and role
// change), against the real server and database: what this instance changes is listed at once,
// what changes behind its back (SQL, another instance) within the TTL.

const adminName = uniqueName("admin");
const t = await startTestServer({ env: { ADMIN_USERNAMES: adminName } });
const sql = t.database.sql;
const api = apiFor(t);
// Registered under a name in ADMIN_USERNAMES: an admin, for the role changes.
const admin = await t.register(adminName);

// ---------------------------------------------------------------------------------------
// The user list

describe("the user list", () => {
  let caller: Registered;

  beforeAll(async () => {
    caller = await t.register();
    expect(admin.user.role).toBe("admin");
  });

  type PublicUser = { id: number; username: string; role: string; createdAt: string };
  type Query = { after?: number; limit?: number };

  const usersPath = ({ after, limit }: Query) => {
    const params = new URLSearchParams();
    if (after !== undefined) params.set("after", String(after));
    if (limit !== undefined) params.set("limit", String(limit));
    const query = params.toString();
    return query === "" ? "/api/users" : `/api/users?${query}`;
  };

  async function storedUsers(): Promise<PublicUser[]> {
    const rows = await sql<{ id: number; username: string; role: string; created_at: Date }[]>`
      SELECT id, username, role::text AS role, created_at FROM users ORDER BY id`;
    return rows.map((r) => ({ id: r.id, username: r.username, role: r.role, createdAt: new Date(r.created_at).toISOString() }));
  }

  /** The page and Link header the database says `query` should get. */
  async function expectedPage(query: Query): Promise<{ users: PublicUser[]; link: string | null }> {
    const limit = query.limit ?? 100;
    const rest = (await storedUsers()).filter((u) => query.after === undefined || u.id > query.after);
    const users = rest.slice(0, limit);
    return { users, link: rest.length > limit ? `</api/users?after=${users.at(-1)!.id}&limit=${limit}>; rel="next"` : null };
  }

  async function listed(query: Query): Promise<{ users: PublicUser[]; link: string | null }> {
    const res = await api("GET", usersPath(query), caller.token);
    const link = res.headers.get("link");
    return { users: (await expectStatus(res, 200)) as PublicUser[], link };
  }

  async function expectListedAsStored(queries: Query[]): Promise<void> {
    for (const query of queries) expect({ query, ...(await listed(query)) }).toEqual({ query, ...(await expectedPage(query)) });
  }

  /**
   * Reads `queries` over and over until stopped, so that every page is in memory and fresh when
   * a change lands: a change that failed to drop them would be answered stale for up to 1 s.
   */
  function keepReading(queries: Query[]): () => Promise<void> {
    let reading = true;
    const loop = (async () => {
      while (reading) for (const query of queries) await listed(query);
    })();
    return async () => {
      reading = false;
      await loop;
    };
  }

  /** Pages around the current end of the list, where a new user lands. */
  async function pagesAtTheEnd(): Promise<Query[]> {
    const ids = (await storedUsers()).map((u) => u.id);
    const [secondLast, last] = [ids.at(-2)!, ids.at(-1)!];
    return [{}, { limit: 1000 }, { after: secondLast, limit: 1 }, { after: last }, { after: last, limit: 1 }, { after: secondLast, limit: 2 }];
  }

  test("a user who registers is listed at once on this instance, and the Link of what was the last page appears", async () => {
    const queries = await pagesAtTheEnd();
    await expectListedAsStored(queries);
    // The last page has no Link yet.
    expect((await listed(queries[2]!)).link).toBeNull();
    const stop = keepReading(queries);
    let newcomer: Registered;
    try {
      newcomer = await t.register(uniqueName("newcomer"));
    } finally {
      await stop();
    }
    await expectListedAsStored(queries);
    expect((await listed({ limit: 1000 })).users).toContainEqual(newcomer.user);
    expect((await listed(queries[3]!)).users).toEqual([newcomer.user]);
    expect((await listed(queries[2]!)).link).not.toBeNull();
  });

  const roles = ["moderator", "admin", "user", "admin", "user"] as const;

  test("a role change by an admin (PATCH /api/users/:id) is listed at once, every time", async () => {
    const target = await t.register(uniqueName("promoted"));
    const queries: Query[] = [{ limit: 1000 }, { after: target.user.id - 1, limit: 1 }, {}];
    for (const role of roles) {
      await expectListedAsStored(queries);
      const stop = keepReading(queries);
      try {
        expect(await expectStatus(await api("PATCH", `/api/users/${target.user.id}`, admin.token, { role }), 200)).toEqual({ ...target.user, role });
      } finally {
        await stop();
      }
      expect({ role, listed: (await listed(queries[1]!)).users }).toEqual({ role, listed: [{ ...target.user, role }] });
      await expectListedAsStored(queries);
    }
  });

  // Changes this instance does not see (another instance, the CLI, SQL) show within the TTL.
  const behindTheBack: [label: string, change: () => Promise<void>][] = [
    [
      "a user inserted with SQL",
      async () => {
        const name = uniqueName("inserted");
        await sql`INSERT INTO users (username, username_key, password_hash) VALUES (${name}, ${name.toLowerCase()}, '$argon2id$v=19$m=65536,t=2,p=1$fixturefixture$fixture')`;
      },
    ],
    [
      "a role changed with SQL",
      async () => {
        await sql`UPDATE users SET role = 'moderator' WHERE id = (SELECT max(id) FROM users)`;
      },
    ],
  ];

  test.each(behindTheBack)("%s is listed within 1.2 s, with the right Link headers", async (_label, change) => {
    const queries = await pagesAtTheEnd();
    await expectListedAsStored(queries);
    const changed = performance.now();
    await change();
    const expected = await Promise.all(queries.map(expectedPage));
    // When the first reads that all saw the change were asked for.
    let elapsed = 0;
    await until(
      async () => {
        elapsed = performance.now() - changed;
        const now = await Promise.all(queries.map(listed));
        return Bun.deepEquals(now, expected);
      },
      "the change to be listed",
      3_000,
    );
    expect(elapsed).toBeLessThan(1_200);
    await expectListedAsStored(queries);
  });

  test("following Link from the first page in pages of 3 still walks every user once, in id order, as stored", async () => {
    const walked: PublicUser[] = [];
    let path: string | null = "/api/users?limit=3";
    for (let i = 0; path !== null; i++) {
      if (i > 1_000) throw new Error("Link never ends");
      const res: Response = await api("GET", path, caller.token);
      const link: string | null = res.headers.get("link");
      const page = (await expectStatus(res, 200)) as PublicUser[];
      walked.push(...page);
      path = link === null ? null : /^<([^>]+)>; rel="next"$/.exec(link)![1]!;
    }
    expect(walked).toEqual(await storedUsers());
  });
});

