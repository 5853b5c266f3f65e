// The floor for memory per socket and handshakes: Socket.IO on @socket.io/bun-engine in one
// Bun.serve, as the service serves it, with nothing of the service's (no token check, no query, no
// rooms but Socket.IO's own, no handler): what the stack itself holds per connection.
import { Server as Engine } from "@socket.io/bun-engine";
import { Server } from "socket.io";

const io = new Server();
const engine = new Engine({ path: "/socket.io/" });
io.bind(engine);
const { websocket } = engine.handler();
const server = Bun.serve({
  port: Number(process.env.PORT ?? 0),
  hostname: "127.0.0.1",
  websocket,
  fetch: (request, bunServer) => (new URL(request.url).pathname === "/healthz" ? new Response("ok") : engine.handleRequest(request, bunServer)),
});
console.log(JSON.stringify({ msg: "listening", url: `http://127.0.0.1:${server.port}` }));
process.on("SIGTERM", () => process.exit(0));
