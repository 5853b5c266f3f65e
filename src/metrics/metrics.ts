import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { HashingStats } from "../lib/password.ts";

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * The series of api.md §9, on a registry of this app's own (so several apps in one process,
 * as in the tests, never share counters). prom-client does the bookkeeping and the text format.
 */
export function createMetrics({
  connectedSockets,
  pendingHandshakes,
  engineSessions,
  heldForClients,
  redisUp,
  passwordHashing,
}: {
  connectedSockets: () => number;
  /** Engine.IO handshakes and sessions not authenticated yet (handshake-limits.ts). */
  pendingHandshakes: () => number;
  /** Engine.IO sessions open, authenticated or not. */
  engineSessions: () => number;
  /** What the process holds for Socket.IO clients that have not read it yet (slow-clients.ts). */
  heldForClients: () => { total: number; max: number };
  redisUp?: () => boolean;
  /** The password-hashing gate (src/lib/password.ts). */
  passwordHashing?: () => Readonly<HashingStats>;
}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const httpRequests = new Counter({
    name: "http_requests_total",
    help: "REST requests answered, by method, route pattern and status",
    labelNames: ["method", "route", "status"] as const,
    registers,
  });
  const httpDuration = new Histogram({
    name: "http_request_duration_seconds",
    help: "REST request latency, by method, route pattern and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  /** A gauge read from its source at each scrape. */
  const readGauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  readGauge("socketio_connected_sockets", "Socket.IO sockets connected to this instance", connectedSockets);
  readGauge(
    "socketio_pending_handshakes",
    "Engine.IO handshakes and sessions not authenticated yet (each ends within SOCKET_CONNECT_TIMEOUT_MS)",
    pendingHandshakes,
  );
  readGauge("socketio_engine_sessions", "Engine.IO sessions open on this instance, authenticated or not", engineSessions);
  readGauge(
    "socketio_buffered_bytes",
    "Bytes this process holds for Socket.IO clients that have not read them yet (Bun's websocket queues, packets waiting for a poll)",
    () => heldForClients().total,
  );
  readGauge(
    "socketio_buffered_bytes_max",
    "The most bytes this process holds for one Socket.IO client (at most SOCKET_MAX_BUFFERED_BYTES)",
    () => heldForClients().max,
  );
  const slowClients = new Counter({
    name: "socketio_slow_clients_dropped_total",
    help: "Socket.IO clients disconnected for not reading (over SOCKET_MAX_BUFFERED_BYTES held for them), by transport",
    labelNames: ["transport"] as const,
    registers,
  });
  // Both series from the start, at 0, so a rate over them is defined before the first drop.
  for (const transport of ["websocket", "polling"]) slowClients.inc({ transport }, 0);
  const refusedEvents = new Counter({
    name: "socketio_events_refused_total",
    help: "Client events refused RATE_LIMITED for being over their socket's budget (SOCKET_EVENT_RATE)",
    registers,
  });
  const abusiveClients = new Counter({
    name: "socketio_abusive_clients_dropped_total",
    help: "Sockets disconnected for sending on past their event budget after SOCKET_EVENT_REFUSALS refusals",
    registers,
  });
  if (redisUp) {
    new Gauge({
      name: "chat_dependency_up",
      help: "1 while this instance reaches the dependency, else 0 (redis: with REDIS_URL, as last seen by its connection and a PING every 2 s)",
      labelNames: ["dependency"] as const,
      registers,
      collect() {
        this.set({ dependency: "redis" }, redisUp() ? 1 : 0);
      },
    });
  }
  if (passwordHashing) {
    readGauge("chat_password_hashes_in_flight", "argon2id hashes and verifications running now (19 MiB each)", () => passwordHashing().inFlight);
    readGauge("chat_password_hashes_in_flight_max", "The most argon2id runs at once since start (at most PASSWORD_HASH_CONCURRENCY)", () => passwordHashing().inFlightMax);
    readGauge("chat_password_hashes_queued", "Password checks waiting for a turn (at most PASSWORD_HASH_QUEUE)", () => passwordHashing().queued);
  }
  const hashesRefused = new Counter({
    name: "chat_password_hashes_refused_total",
    help: "Password checks refused with 503 because PASSWORD_HASH_QUEUE was full",
    registers,
  });
  const loginsDelayed = new Counter({
    name: "chat_login_delayed_total",
    help: "Password checks held back by LOGIN_BACKOFF_DELAY_MS: their username's RATE_LIMIT_LOGIN_FAILURES_GLOBAL was spent",
    registers,
  });
  const messages = new Counter({
    name: "chat_messages_total",
    help: "Messages sent, by transport and result (accepted, or rejected with its error code)",
    labelNames: ["transport", "result", "code"] as const,
    registers,
  });
  const persist = new Histogram({
    name: "chat_message_persist_seconds",
    help: "Time from accepting one message to its commit (waiting for its batch, lock, insert, commit)",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers,
  });

  const batches = new Histogram({
    name: "chat_message_batch_rows",
    help: "Messages per group-commit transaction, by outcome (committed, split: retried row by row, failed: no database)",
    labelNames: ["outcome"] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers,
  });

  return {
    registry,
    request(method: string, route: string, status: number, seconds: number): void {
      const labels = { method, route, status: String(status) };
      httpRequests.inc(labels);
      httpDuration.observe(labels, seconds);
    },
    passwordHashRefused(): void {
      hashesRefused.inc();
    },
    loginDelayed(): void {
      loginsDelayed.inc();
    },
    slowClientDropped(transport: "websocket" | "polling"): void {
      slowClients.inc({ transport });
    },
    socketEventRefused(): void {
      refusedEvents.inc();
    },
    abusiveClientDropped(): void {
      abusiveClients.inc();
    },
    messageAccepted(transport: "socket" | "rest"): void {
      messages.inc({ transport, result: "accepted", code: "" });
    },
    messageRejected(transport: "socket" | "rest", code: string): void {
      messages.inc({ transport, result: "rejected", code });
    },
    persisted(seconds: number): void {
      persist.observe(seconds);
    },
    messageBatch(rows: number, outcome: "committed" | "split" | "failed"): void {
      batches.observe({ outcome }, rows);
    },
  };
}
