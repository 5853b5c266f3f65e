import pino from "pino";

export type Logger = pino.Logger;

/**
 * JSON lines on stdout (or `destination`, for tests); tokens and passwords are redacted
 * wherever they appear.
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
  return destination ? pino(options, destination) : pino(options);
}
