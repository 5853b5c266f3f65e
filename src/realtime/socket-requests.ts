// Requests to /socket.io/ that the engine would mishandle, answered before it sees them.

/**
 * True when a request asks to upgrade but is not a websocket handshake (`Upgrade: h2c`, no
 * `Sec-WebSocket-Key`, not a GET): the engine would try `server.upgrade()` and, when it fails,
 * answer 500. The engine's own answer to a bad request is given instead.
 */
export function isBadUpgrade(request: Request): boolean {
  const upgrade = request.headers.get("upgrade");
  if (upgrade === null) return false;
  return !(request.method === "GET" && upgrade.trim().toLowerCase() === "websocket" && request.headers.has("sec-websocket-key"));
}

/** Engine.IO's answer to a malformed request (error code 3), as the engine itself words it. */
export function engineBadRequest(): Response {
  return Response.json({ code: 3, message: "Bad request" }, { status: 400 });
}

/**
 * A polling POST whose declared size is surely over the packet limit: the engine would read the whole
 * body before refusing it (a 100 MiB body costs 200 MiB). It compares UTF-16 code units with the
 * limit, and one code unit takes at most 3 bytes of UTF-8, so only a body over 3 × the limit in bytes
 * is sure to be refused. Returns a stand-in request, with a body just over the limit and not a byte of
 * the original read, that takes the engine's own path for an oversized payload: 413, and the session
 * closed, as if it had read it.
 */
export function oversizedPoll(request: Request, maxPacketBytes: number): Request | undefined {
  if (request.method !== "POST") return undefined;
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (!(declared > 3 * maxPacketBytes)) return undefined;
  const headers = new Headers(request.headers);
  headers.delete("content-length");
  return new Request(request.url, { method: "POST", headers, body: "x".repeat(maxPacketBytes + 1) });
}
