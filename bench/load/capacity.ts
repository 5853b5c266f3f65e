/**
 * Capacity: opens `sockets` authenticated websocket connections (`concurrency` handshakes in
 * flight), reports the connection rate, then holds them idle (answering pings) until a line
 * arrives on stdin, so bench/run.ts can read the server's memory meanwhile.
 */
import { connectMany } from "../lib/sio-client.ts";
import { perSecond, progress, readSettings, report } from "../lib/generator.ts";

interface Settings {
  url: string;
  tokens: string[];
  sockets: number;
  concurrency: number;
}

const settings = await readSettings<Settings>();
const tokens = Array.from({ length: settings.sockets }, (_, i) => settings.tokens[i % settings.tokens.length]!);
let closed = 0;
const started = performance.now();
const clients = await connectMany(settings.url, tokens, settings.concurrency);
const elapsed = performance.now() - started;
for (const client of clients) client.onClose = () => closed++;
progress(`capacity: ${clients.length} sockets in ${Math.round(elapsed)} ms`);
report("READY", { sockets: clients.length, connectMs: Math.round(elapsed), connectionsPerSecond: perSecond(clients.length, elapsed) });

// Hold until told to stop; then say how many the server dropped meanwhile.
for await (const _ of console) break;
report("RESULT", { sockets: clients.length, droppedWhileIdle: closed, connectMs: Math.round(elapsed), connectionsPerSecond: perSecond(clients.length, elapsed) });
process.exit(0);
