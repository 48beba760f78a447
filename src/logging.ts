/**
 * The service log: JSON lines via pino. Credentials never reach it: the
 * redaction list covers every field that could carry one.
 */
import { pino } from "pino";

export type Logger = pino.Logger;

/** Field paths whose values are replaced before a line is written. */
export const REDACTED_PATHS = [
  "clientSecret",
  "client_secret",
  "*.clientSecret",
  "*.client_secret",
  "agentCredential.clientSecret",
  "*.agentCredential.clientSecret",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "password",
  "*.password",
  "token",
  "*.token",
  "access_token",
  "*.access_token",
];

/** Creates the logger. By default, level info to stdout. */
export function createLogger(options: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      level: options.level ?? "info",
      base: { service: "llm-principal-broker" },
      redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
    },
    options.destination,
  );
}
