import { z } from "@hono/zod-openapi";
import type { AppRouter } from "../lib/app-env.ts";
import { clientEvents, handshakeAuthSchema, serverEvents } from "../realtime/events.ts";

/** A payload schema as JSON Schema: what a client may send (input side) or will receive (output side). */
const jsonSchema = (schema: z.ZodType, io: "input" | "output") => {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: "any" }) as Record<string, unknown>;
  return rest;
};

const operationId = (direction: "send" | "receive", event: string) => `${direction}_${event.replace(/\W/g, "_")}`;

/**
 * The AsyncAPI 3.0 document of the Socket.IO half (served at /asyncapi.json), generated from
 * the same zod schemas the socket handlers validate with (realtime/events.ts).
 */
export function asyncApiDocument(about: { title: string; version: string }) {
  const messages: Record<string, unknown> = {};
  const operations: Record<string, unknown> = {};
  for (const [event, spec] of Object.entries(clientEvents)) {
    const key = `client_${event}`;
    messages[key] = { name: event, title: event, summary: spec.summary, payload: jsonSchema(spec.payload, "input"), "x-ack": jsonSchema(spec.ack, "output") };
    operations[operationId("receive", event)] = {
      action: "receive",
      summary: `Client emits \`${event}\``,
      channel: { $ref: "#/channels/socket" },
      messages: [{ $ref: `#/channels/socket/messages/${key}` }],
    };
  }
  for (const [event, spec] of Object.entries(serverEvents)) {
    const key = `server_${event.replace(/\W/g, "_")}`;
    messages[key] = { name: event, title: event, summary: spec.summary, payload: jsonSchema(spec.payload, "output") };
    operations[operationId("send", event)] = {
      action: "send",
      summary: `Server emits \`${event}\``,
      channel: { $ref: "#/channels/socket" },
      messages: [{ $ref: `#/channels/socket/messages/${key}` }],
    };
  }
  return {
    asyncapi: "3.0.0",
    info: {
      title: `${about.title} realtime`,
      version: about.version,
      description:
        "Socket.IO v4 at /socket.io/ on the REST port (polling and websocket). Handshake: `io(url, { auth: { token } })`; " +
        "a missing or bad token fails with `connect_error` whose message is exactly `Unauthorized`; " +
        "a user who already has SOCKET_MAX_PER_USER sockets connected gets `Too many connections`. " +
        "Resume: `auth.since` maps channel ids to the last `seq` the client has; the server replays every event after it, " +
        "in order, before live ones, or sends `resync` for a channel it cannot replay; a malformed `since` fails with " +
        "`connect_error` `Invalid auth.since: …` (`data.error.code` VALIDATION_FAILED). The schema of `auth` is `x-handshake-auth`. " +
        "An event's ack, if the client passes one, is its last argument (`x-ack`); without one, refusals arrive as `<event>:error`.",
    },
    servers: { local: { host: "localhost:3000", protocol: "ws", pathname: "/socket.io/" } },
    "x-handshake-auth": jsonSchema(handshakeAuthSchema, "input"),
    channels: { socket: { address: "/", messages } },
    operations,
  };
}

export function mountAsyncApi(app: AppRouter, about: { title: string; version: string }): void {
  const document = asyncApiDocument(about);
  app.get("/asyncapi.json", (c) => c.json(document));
}
