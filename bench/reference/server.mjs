// The reference the benchmarks compare against: the founding brief's stack shape at its most
// direct, on Node.js — node:http, socket.io with its default engine, and `pg` — storing one
// row per message, then broadcasting it. Same database schema, same tokens, same events as
// the service, and no more features than the scenarios touch (no rate limits, no sessions
// check, no logs), so every difference is the cost of doing it this way.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import pg from "pg";
import { Server } from "socket.io";

const { DATABASE_URL, JWT_SECRET, PORT = "0", HOST = "127.0.0.1" } = process.env;
// The service's default DATABASE_TIMEOUT_MS as the statement timeout, so an abandoned search stops.
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10, statement_timeout: 5_000 });
const GENERAL = 1;

function verify(token) {
  const [header, payload, signature] = String(token ?? "").split(".");
  if (!signature) return null;
  const expected = createHmac("sha256", JWT_SECRET).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
  if (claims.exp * 1000 < Date.now()) return null;
  return { id: Number(claims.sub), username: claims.username };
}

function send(res, status, body) {
  const json = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
  res.end(json);
}

const toMessage = (row) => ({
  id: row.id,
  channelId: row.channel_id,
  userId: row.user_id,
  username: row.username,
  content: row.content,
  timestamp: row.created_at.toISOString(),
});

const http = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/healthz") return send(res, 200, { status: "ok" });
    const user = verify(req.headers.authorization?.replace(/^Bearer /, ""));
    if (!user) return send(res, 401, { error: { code: "UNAUTHORIZED", message: "Unauthorized" } });
    // The service's defaults: 50 messages, 100 users.
    const limit = (fallback, max) => Math.min(max, Number(url.searchParams.get("limit") ?? fallback));
    if (url.pathname === "/api/messages") {
      // `?after=<id>`: newer than id, oldest first — how a client of this stack catches up after a reconnect.
      const after = url.searchParams.get("after");
      const { rows } = await pool.query(
        after === null
          ? `SELECT m.id, m.channel_id, m.user_id, u.username, m.content, m.created_at
               FROM messages m JOIN users u ON u.id = m.user_id
              WHERE m.channel_id = $1 ORDER BY m.id DESC LIMIT $2`
          : `SELECT m.id, m.channel_id, m.user_id, u.username, m.content, m.created_at
               FROM messages m JOIN users u ON u.id = m.user_id
              WHERE m.channel_id = $1 AND m.id > $3 ORDER BY m.id ASC LIMIT $2`,
        after === null ? [GENERAL, limit(50, 200)] : [GENERAL, limit(50, 200), Number(after)],
      );
      return send(res, 200, rows.map(toMessage));
    }
    if (url.pathname === "/api/messages/search") {
      // The direct way: rank every match over the caller's channels, keep the best.
      const { rows } = await pool.query(
        `SELECT h.id, h.channel_id, h.user_id, u.username, h.content, h.created_at,
                ts_headline('simple', h.content, plainto_tsquery('simple', $1), 'MaxWords=35, MinWords=15') AS highlight
           FROM (SELECT m.*, ts_rank_cd(m.search_vector, q) AS rank
                   FROM messages m, plainto_tsquery('russian', $1) q
                  WHERE m.search_vector @@ q AND m.deleted_at IS NULL
                    AND m.channel_id IN (SELECT channel_id FROM channel_members WHERE user_id = $2)
                  ORDER BY rank DESC, m.id DESC LIMIT $3) h
           JOIN users u ON u.id = h.user_id
          ORDER BY h.rank DESC, h.id DESC`,
        [url.searchParams.get("q") ?? "", user.id, limit(20, 100)],
      );
      return send(res, 200, rows.map((r) => ({ message: toMessage(r), highlight: r.highlight })));
    }
    if (url.pathname === "/api/users") {
      const { rows } = await pool.query(`SELECT id, username, role, created_at FROM users ORDER BY id LIMIT $1`, [limit(100, 1000)]);
      return send(res, 200, rows.map((r) => ({ id: r.id, username: r.username, role: r.role, createdAt: r.created_at.toISOString() })));
    }
    send(res, 404, { error: { code: "NOT_FOUND", message: "Not found" } });
  } catch (error) {
    send(res, 500, { error: { code: "INTERNAL", message: String(error) } });
  }
});

const io = new Server(http);
io.use(async (socket, next) => {
  const user = verify(socket.handshake.auth?.token);
  if (!user) return next(new Error("Unauthorized"));
  socket.data.user = user;
  // Channels before connecting, so the socket is in its rooms when its first message arrives.
  const { rows } = await pool.query("SELECT channel_id FROM channel_members WHERE user_id = $1", [user.id]);
  socket.data.rooms = rows.map((r) => `channel:${r.channel_id}`);
  next();
});
io.on("connection", (socket) => {
  const { user } = socket.data;
  socket.join(socket.data.rooms);
  socket.on("message", async (input, ack) => {
    try {
      const channelId = input?.channelId ?? GENERAL;
      if (typeof input?.content !== "string" || input.content.length === 0 || !socket.rooms.has(`channel:${channelId}`)) {
        return ack?.({ ok: false, error: { code: "VALIDATION_ERROR", message: "Bad message" } });
      }
      const { rows } = await pool.query(
        "INSERT INTO messages (channel_id, user_id, content) VALUES ($1, $2, $3) RETURNING id, channel_id, user_id, content, created_at",
        [channelId, user.id, input.content],
      );
      const message = toMessage({ ...rows[0], username: user.username });
      io.to(`channel:${channelId}`).emit("message", message);
      ack?.({ ok: true, message });
    } catch (error) {
      ack?.({ ok: false, error: { code: "INTERNAL", message: String(error) } });
    }
  });
});

http.listen(Number(PORT), HOST, () => {
  console.log(JSON.stringify({ msg: "listening", url: `http://${HOST}:${http.address().port}` }));
});
process.on("SIGTERM", () => process.exit(0));
