import pino from "pino";

export type Logger = pino.Logger;

/** JSON lines on stdout; tokens and passwords are redacted wherever they appear. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: undefined,
    redact: {
      paths: ["password", "token", "refreshToken", "*.password", "*.token", "*.refreshToken", "headers.authorization"],
      censor: "[redacted]",
    },
  });
}
