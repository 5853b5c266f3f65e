import { api, connect, expectStatus, nextEvent, register, type Account } from "./http.ts";

/**
 * The service's main paths, black-box through nginx: register, login, history, search, and
 * Socket.IO over websocket and over polling (a message sent on one reaches the other).
 */
export async function checkThroughProxy(base: string): Promise<{ accounts: Account[]; messages: number }> {
  const tag = crypto.randomUUID().slice(0, 8);
  const alice = await register(base, `alice_${tag}`);
  const bob = await register(base, `bob_${tag}`);

  const login = await api(base, "POST", "/api/auth/login", { body: { username: alice.username, password: alice.password } });
  expectStatus(login, 200, "login");
  const wrong = await api(base, "POST", "/api/auth/login", { body: { username: alice.username, password: "not-the-password" } });
  expectStatus(wrong, 401, "login with a wrong password");
  if (wrong.body?.error?.code !== "INVALID_CREDENTIALS") throw new Error(`wrong password: ${JSON.stringify(wrong.body)}`);

  const websocket = await connect(base, alice.token, "websocket");
  const polling = await connect(base, bob.token, "polling");
  try {
    const words = `containers ${tag}`;
    const arrives = nextEvent(polling, "message", (m: any) => m.content === words);
    const ack: any = await websocket.timeout(10_000).emitWithAck("message", { content: words, clientId: `c-${tag}` });
    if (!ack?.ok || typeof ack.message?.seq !== "number") throw new Error(`send over websocket: ${JSON.stringify(ack)}`);
    const live = await arrives;
    if (live.id !== ack.message.id) throw new Error(`polling client got ${JSON.stringify(live)}, ack was ${JSON.stringify(ack)}`);

    const back = nextEvent(websocket, "message", (m: any) => m.content === `${words} reply`);
    const ack2: any = await polling.timeout(10_000).emitWithAck("message", { content: `${words} reply` });
    if (!ack2?.ok) throw new Error(`send over polling: ${JSON.stringify(ack2)}`);
    await back;

    const history = await api(base, "GET", "/api/messages?limit=10", { token: bob.token });
    expectStatus(history, 200, "history");
    if (!history.body.some((m: any) => m.id === ack.message.id && m.content === words)) throw new Error(`history lacks the message: ${JSON.stringify(history.body)}`);

    // Search finds it (the index may lag by a moment; docs/api.md says how long at most).
    const deadline = Date.now() + 10_000;
    for (;;) {
      const search = await api(base, "GET", `/api/messages/search?q=${encodeURIComponent(tag)}`, { token: alice.token });
      expectStatus(search, 200, "search");
      if (search.body.some((hit: any) => hit.message.id === ack.message.id)) break;
      if (Date.now() > deadline) throw new Error(`search did not find the message: ${JSON.stringify(search.body)}`);
      await Bun.sleep(250);
    }
  } finally {
    websocket.close();
    polling.close();
  }
  return { accounts: [alice, bob], messages: 2 };
}

/** Every message of the general channel, oldest first (paged with `after`). */
export async function allMessages(base: string, token: string): Promise<any[]> {
  const all: any[] = [];
  let after = 0;
  for (;;) {
    const page = await api(base, "GET", `/api/messages?after=${after}&limit=100`, { token });
    expectStatus(page, 200, "history page");
    all.push(...page.body);
    if (page.body.length < 100) return all;
    after = page.body[page.body.length - 1].id;
  }
}
