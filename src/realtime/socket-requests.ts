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
 * A polling POST with its body read here, counted in bytes as it arrives, whatever its framing
 * (`Content-Length` or chunked): the engine itself reads a body whole before comparing its length
 * with the limit, so a chunked POST of 120 MiB was held whole (Bun lets a body reach 128 MiB).
 * Up to `maxPacketBytes` it comes back as a request with the bytes read; past it (declared or
 * counted), the rest is not read and a stand-in comes back whose body is just over the limit, so
 * the engine takes its own path for an oversized payload: 413, and the session closed. Bytes are
 * what engine.io-client splits its polling payloads by (the `maxPayload` of the handshake) and what
 * the websocket limit counts. A client that goes away mid-body gets the engine's 400.
 */
export async function boundedPoll(request: Request, maxPacketBytes: number): Promise<Request | Response> {
  if (request.method !== "POST" || request.body === null) return request;
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxPacketBytes) return oversized(request, maxPacketBytes);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxPacketBytes) {
        // Bun stops taking the rest from the connection; it is never buffered.
        reader.cancel().catch(() => undefined);
        return oversized(request, maxPacketBytes);
      }
      chunks.push(value);
    }
  } catch {
    return engineBadRequest();
  }
  return new Request(request.url, { method: "POST", headers: withoutFraming(request.headers), body: Buffer.concat(chunks, size) });
}

function oversized(request: Request, maxPacketBytes: number): Request {
  return new Request(request.url, { method: "POST", headers: withoutFraming(request.headers), body: "x".repeat(maxPacketBytes + 1) });
}

/** The headers, less those describing the original body (the copy has its own). */
function withoutFraming(original: Headers): Headers {
  const headers = new Headers(original);
  headers.delete("content-length");
  headers.delete("transfer-encoding");
  return headers;
}
