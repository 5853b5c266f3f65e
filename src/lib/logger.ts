import pino from "pino";

export type Logger = pino.Logger;

/**
 * JSON lines on stdout (or `destination`, for tests); tokens and passwords are redacted
 * wherever they appear. Stdout is written asynchronously: lines logged while a write is in
 * flight go out together in the next one, instead of a system call each (a line per request
 * otherwise costs more than serving a cached read); pino flushes what is left on exit.
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
