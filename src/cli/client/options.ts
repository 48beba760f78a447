/**
 * The options every client verb shares (address, credentials, --json) and
 * the value parsers of all of them: a bad value is refused by commander with
 * exit code 2 and a message naming the option, never ignored.
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_ADDR, type ConnectionOptions } from "./connection.js";
import { CLIENT_ENV } from "./env.js";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "1h30m", "500ms" in milliseconds. */
export function parseDuration(value: string): number {
  const text = value.trim();
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (text === "" || parts.map((p) => p[0]).join("") !== text) {
    throw new InvalidArgumentError("expected a duration with a unit, such as 90s, 30m, 2h or 1h30m.");
  }
  const ms = parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]!]!, 0);
  if (ms <= 0) throw new InvalidArgumentError("expected a duration above zero.");
  return ms;
}

/** A whole number of at least `min`. */
export function wholeNumber(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`expected a whole number of at least ${min}.`);
    const n = Number(value.trim());
    if (n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}.`);
    return n;
  };
}

/** A revision (a non-negative 64-bit integer). */
export function parseRevision(value: string): bigint {
  if (!/^\d{1,19}$/.test(value.trim())) throw new InvalidArgumentError("expected a revision: a whole number, 0 for now.");
  return BigInt(value.trim());
}

/** A repeatable option's values, in order. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** A non-empty value. */
export function nonEmpty(value: string): string {
  if (value.trim() === "") throw new InvalidArgumentError("expected a value.");
  return value;
}

/** What commander gives a client verb: the connection options and --json. */
export interface ClientFlags extends ConnectionOptions {
  json?: boolean;
}

/** Adds the connection and output options to a client verb. */
export function clientOptions(cmd: Command): Command {
  return cmd
    .option("--json", "print JSON for scripts instead of text")
    .optionsGroup("connection options:")
    .addOption(new Option("--addr <host:port>", `the broker's gRPC address (https://host:port for TLS) (default: ${DEFAULT_ADDR})`).env(CLIENT_ENV.addr))
    .addOption(new Option("--token <token>", "bearer access token (AUTH_MODE=jwt); prefer the variable: flags show in ps").env(CLIENT_ENV.token))
    .addOption(new Option("--as <did>", "dev mode only: act as this delegator DID (x-delegator-did)").env(CLIENT_ENV.as))
    .addOption(new Option("--cert <file>", "client certificate, PEM (AUTH_MODE=mtls)").env(CLIENT_ENV.cert))
    .addOption(new Option("--key <file>", "its private key, PEM").env(CLIENT_ENV.key))
    .addOption(new Option("--ca <file>", "CA certificates that issued the broker's certificate, PEM").env(CLIENT_ENV.ca))
    .addOption(new Option("--timeout <duration>", "deadline of each call (default: 30s)").argParser(parseDuration));
}
