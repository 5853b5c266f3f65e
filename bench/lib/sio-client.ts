/**
 * Just enough of the Socket.IO v4 protocol (Engine.IO 4, websocket transport only) to hold
 * thousands of clients in one load-generator process: socket.io-client costs several times
 * more CPU per packet, and on two cores the generator must leave the server room to run.
 * Both servers under test speak this protocol, so the same client measures both.
 *
 * Frames: "0{...}" open, "2"/"3" ping/pong, "40{auth}" connect, "40{sid}" connected,
 * "44{error}" refused, "42<id?>[event, data]" event, "43<id>[data]" ack.
 */
export class SioClient {
  private nextAckId = 0;
  private readonly acks = new Map<number, (data: unknown) => void>();
  /** Raw "42[...]" frames (events from the server), left unparsed so the caller pays only for what it reads. */
  onEvent: (frame: string) => void = () => {};
  onClose: () => void = () => {};

  private constructor(private readonly ws: WebSocket) {}

  /**
   * `auth`: more of the handshake's auth beside the token (a resume's `since`, api.md §11).
   * `onEvent`: set before the handshake, so no event the server sends right after it (a replay)
   * can arrive before the caller's handler.
   */
  static connect(baseUrl: string, token: string, options: { timeoutMs?: number; auth?: Record<string, unknown>; onEvent?: (frame: string) => void } = {}): Promise<SioClient> {
    const { timeoutMs = 30_000, auth = {} } = options;
    const url = `${baseUrl.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const client = new SioClient(ws);
      if (options.onEvent) client.onEvent = options.onEvent;
      const timer = setTimeout(() => fail(new Error("connect timed out")), timeoutMs);
      let settled = false;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.close();
        reject(error);
      };
      ws.onerror = () => fail(new Error("websocket error"));
      ws.onclose = () => {
        fail(new Error("closed before connecting"));
        client.onClose();
      };
      ws.onmessage = (event) => {
        const frame = event.data as string;
        if (frame === "2") return ws.send("3");
        const type = frame.charCodeAt(0);
        if (type === 52 /* "4": a Socket.IO packet */) {
          const packet = frame.charCodeAt(1);
          if (packet === 50 /* "2" event */) return client.onEvent(frame);
          if (packet === 51 /* "3" ack */) return client.settleAck(frame);
          if (packet === 48 /* "0" connected */ && !settled) {
            settled = true;
            clearTimeout(timer);
            return resolve(client);
          }
          if (packet === 52 /* "4" refused */) return fail(new Error(`refused: ${frame.slice(2)}`));
          return;
        }
        if (type === 48 /* "0": Engine.IO open */) ws.send(`40${JSON.stringify({ ...auth, token })}`);
      };
    });
  }

  /** Emits `event` with `data`; resolves with the server's ack. */
  emitWithAck(event: string, data: unknown): Promise<unknown> {
    const id = this.nextAckId++;
    return new Promise((resolve) => {
      this.acks.set(id, resolve);
      this.ws.send(`42${id}${JSON.stringify([event, data])}`);
    });
  }

  private settleAck(frame: string): void {
    let i = 2;
    while (frame.charCodeAt(i) >= 48 && frame.charCodeAt(i) <= 57) i++;
    const id = Number(frame.slice(2, i));
    const resolve = this.acks.get(id);
    if (!resolve) return;
    this.acks.delete(id);
    resolve((JSON.parse(frame.slice(i)) as unknown[])[0]);
  }

  close(): void {
    this.ws.close();
  }
}

/** Connects one client per token, at most `concurrency` handshakes at a time; returns them in order. */
export async function connectMany(baseUrl: string, tokens: string[], concurrency: number): Promise<SioClient[]> {
  const clients: SioClient[] = new Array(tokens.length);
  let next = 0;
  const worker = async () => {
    while (next < tokens.length) {
      const i = next++;
      clients[i] = await SioClient.connect(baseUrl, tokens[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, tokens.length) }, worker));
  return clients;
}
