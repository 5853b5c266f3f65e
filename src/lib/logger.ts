import diagnostics from "node:diagnostics_channel";
import pino from "pino";

export type Logger = pino.Logger;

// Bun 1.4's TracingChannel has no `hasSubscribers` (Node's has, since 22). pino asks it before
// every line and, without a `false`, serialises each line through the tracing channel: a tenth of
// a cached read's CPU. Node's definition until Bun has its own (then this does nothing).
const tracingChannel = Object.getPrototypeOf(diagnostics.tracingChannel("chat:probe")) as object;
if (!("hasSubscribers" in tracingChannel)) {
  Object.defineProperty(tracingChannel, "hasSubscribers", {
    configurable: true,
    get(this: Record<"start" | "end" | "asyncStart" | "asyncEnd" | "error", { hasSubscribers: boolean }>) {
      return this.start.hasSubscribers || this.end.hasSubscribers || this.asyncStart.hasSubscribers || this.asyncEnd.hasSubscribers || this.error.hasSubscribers;
    },
  });
}

/**
 * JSON lines on stdout (or `destination`, for tests); tokens and passwords are redacted
 * wherever they appear. Stdout is written asynchronously: lines logged while a write is in
 * flight go out together in the next one, instead of a system call each (a line per request
 * otherwise costs more than serving a cached read); pino flushes what is left on exit, but not a
 * write already in flight then (sonic-boom's exit flush skips it, and the process ends before it
 * completes): a process that exits on purpose awaits `flushLogs` first.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: undefined,
    redact: {
      paths: ["password", "token", "refreshToken", "*.password", "*.token", "*.refreshToken", "headers.authorization"],
      censor: "[redacted]",
    },
  };
  return pino(options, destination ?? pino.destination({ dest: 1, sync: false }));
}

/** Waits until every line logged so far is written (bounded: a stuck stdout must not hold up an exit). */
export function flushLogs(logger: Logger, timeoutMs = 1_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    logger.flush(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
