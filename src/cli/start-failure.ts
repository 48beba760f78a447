/**
 * Infrastructure failures at start (`serve`, `migrate`) as one line naming
 * the setting to fix: a port in use, a host that is not this machine's, a
 * database that cannot be reached or opened, TLS files that cannot be read.
 * The database URL is shown with its password redacted; the whole line goes
 * through redactSecrets as the last guard. Anything else is not recognised
 * (undefined) and is reported as an unexpected error.
 */
import { redactDatabaseUrl, redactSecrets } from "../config/redact.js";
import type { Settings } from "../config/settings.js";

interface SystemError {
  code?: unknown;
  syscall?: unknown;
  path?: unknown;
  port?: unknown;
  address?: unknown;
  hostname?: unknown;
  severity?: unknown;
  message?: unknown;
  name?: unknown;
  errors?: unknown;
}

/** Network failures of a client connection (the database). */
const CONNECT_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET"]);

/** The first error with a code: the error itself, or the first of an AggregateError (pg tries every address of a host). */
function primary(err: unknown): SystemError {
  const e = (err ?? {}) as SystemError;
  if (e.code === undefined && Array.isArray(e.errors) && e.errors.length > 0) return primary(e.errors[0]);
  return e;
}

function message(e: SystemError): string {
  return typeof e.message === "string" ? e.message : String(e);
}

/** Which setting a listening port comes from. */
function portSetting(port: number, s: Settings): string {
  if (port === s.webPort) return "LLM_BROKER_WEB_PORT";
  return "LLM_BROKER_PORT";
}

/** A failure to listen: from Node's net module (web port) or grpc-js's summary of it (gRPC port). */
function listenFailure(e: SystemError, s: Settings): string | undefined {
  const text = message(e);
  const grpc = /(EADDRINUSE|EACCES|EADDRNOTAVAIL)\b[^\]]*?:(\d+)\]/.exec(text);
  const code = grpc?.[1] ?? (e.syscall === "listen" && typeof e.code === "string" ? e.code : undefined);
  if (code !== undefined) {
    const port = grpc ? Number(grpc[2]) : Number(e.port);
    const setting = grpc ? "LLM_BROKER_PORT" : portSetting(port, s);
    if (code === "EADDRINUSE") return `${setting} ${port} is in use on ${s.host} (another broker, or another program, listens there)`;
    if (code === "EACCES") return `${setting} ${port}: permission denied (ports below 1024 need privileges)`;
    if (code === "EADDRNOTAVAIL") return `LLM_BROKER_HOST ${s.host} is not an address of this machine`;
    return `${setting} ${port}: cannot listen (${code})`;
  }
  if (/Name resolution failed|ENOTFOUND/.test(text) && e.syscall !== "getaddrinfo") {
    return `LLM_BROKER_HOST ${s.host} does not resolve to an address of this machine`;
  }
  return undefined;
}

/** A failure to reach or open the database. */
function databaseFailure(e: SystemError, s: Settings): string | undefined {
  const url = redactDatabaseUrl(s.databaseUrl);
  const postgres = /^postgres(ql)?:\/\//.test(s.databaseUrl);
  const code = typeof e.code === "string" ? e.code : undefined;
  if (postgres && code !== undefined && CONNECT_CODES.has(code)) return `DATABASE_URL: cannot connect to ${url} (${code})`;
  // A PostgreSQL server's refusal: authentication, unknown role or database, too many connections.
  if (postgres && typeof e.severity === "string" && code !== undefined) return `DATABASE_URL: ${url}: ${message(e)} (${code})`;
  if (postgres && /^(timeout exceeded when trying to connect|Connection terminated)/i.test(message(e))) {
    return `DATABASE_URL: cannot connect to ${url} (${message(e)})`;
  }
  if (!postgres && code !== undefined && (code.startsWith("SQLITE_") || (typeof e.syscall === "string" && typeof e.path === "string"))) {
    return `DATABASE_URL: cannot open ${url} (${code}: ${message(e).replace(`${code}: `, "")})`;
  }
  if (e.name === "MigrationError") return `DATABASE_URL ${url}: ${message(e)}`;
  return undefined;
}

/** The TLS files of AUTH_MODE=mtls. */
function tlsFileFailure(e: SystemError, s: Settings): string | undefined {
  if (typeof e.path !== "string" || typeof e.code !== "string") return undefined;
  const files: [string, string][] = [
    ["AUTH_TLS_CERT_FILE", s.auth.tlsCertFile],
    ["AUTH_TLS_KEY_FILE", s.auth.tlsKeyFile],
    ["AUTH_TLS_CLIENT_CA_FILE", s.auth.tlsClientCaFile],
  ];
  const hit = files.find(([, f]) => f !== "" && f === e.path);
  return hit ? `${hit[0]} ${hit[1]}: cannot read it (${e.code})` : undefined;
}

/** One line for a start-up failure of the infrastructure, or undefined for anything else. */
export function describeStartFailure(err: unknown, settings: Settings, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const e = primary(err);
  const line = tlsFileFailure(e, settings) ?? listenFailure(e, settings) ?? databaseFailure(e, settings);
  return line === undefined ? undefined : redactSecrets(line, env);
}
