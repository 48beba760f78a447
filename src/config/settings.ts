/**
 * Typed settings read from the environment. `.env.example` documents every
 * variable; this file is the single place that parses them.
 */

export type RegistrarDriver = "auto" | "keycloak" | "entra" | "stub";
export type GsapDriver = "dev" | "http";
export type AuditDriver = "log" | "chronicle";
export type AuthMode = "dev" | "jwt" | "mtls";

export interface Settings {
  /** Address both listeners bind to. */
  host: string;
  /** gRPC (HTTP/2 cleartext) port. */
  grpcPort: number;
  /** Connect + gRPC-Web (HTTP/1.1) port for browsers; 0 picks a free port. */
  webPort: number;
  databaseUrl: string;
  corsOrigins: string[];
  brokerDid: string;
  agentDidPrefix: string;
  authMode: AuthMode;
  registrar: RegistrarDriver;
  gsapDriver: GsapDriver;
  auditDriver: AuditDriver;
  keycloak: { url: string; realm: string; adminClientId: string; adminClientSecret: string };
  entra: {
    tenantId: string;
    clientId: string;
    clientSecret: string;
    /** Authority host, https. By default, https://login.microsoftonline.com. */
    authorityHost: string;
    graphUrl: string;
    /** When set, agents are Entra Agent ID identities of this blueprint (appId). */
    agentBlueprintId: string;
    /** Object id of the user or group that sponsors agent identities (blueprint path). */
    sponsorId: string;
    /** Also delete applications permanently from deleted items. */
    purgeDeleted: boolean;
  };
  gsap: {
    url: string;
    bearerToken: string;
    corpusEntryCid: string;
    /** Where a delegated context is revoked (relative to url; {context_id} is replaced). */
    revokePath: string;
  };
  chronicle: { webhookUrl: string };
  /** Refuse to grant authority that cannot be audited (see README). */
  auditFailClosed: boolean;
  auditFailClosedTimeoutMs: number;
  http: { timeoutMs: number; maxRetries: number; caFile: string };
  auth: {
    /** Accepted `iss` values. */
    issuers: string[];
    audience: string;
    jwksUrl: string;
    algorithms: string[];
    clockSkewSeconds: number;
    /** Claim holding the caller's DID (dotted path). */
    didClaim: string;
    /** Claim holding the caller's roles (dotted path, e.g. realm_access.roles). */
    rolesClaim: string;
    adminRole: string;
    /** mTLS: the server's certificate and key, and the CA that issues client certificates. */
    tlsCertFile: string;
    tlsKeyFile: string;
    tlsClientCaFile: string;
    /** mTLS: peer identities (DID from a URI SAN, or the CN) that act as admin. */
    mtlsAdmins: string[];
  };
  limits: {
    maxRequestBytes: number;
    /** Longest a call may run; a longer or missing client deadline is cut to it. Watch is exempt. */
    maxDeadlineMs: number;
    /** HTTP/2 streams one gRPC connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS). */
    maxConcurrentStreams: number;
    /**
     * Watch streams one gRPC connection may hold; below maxConcurrentStreams, so
     * unary calls on a connection full of watchers still get a stream.
     */
    watchStreamsPerConnection: number;
    /** Watch streams per delegator (or agent). */
    watchStreamsPerPrincipal: number;
    /** Watch streams per service principal (admin: the GSAP broker, policy engines). */
    watchStreamsPerService: number;
    createPerMinute: number;
    authorizePerSecond: number;
  };
  reconcileIntervalMs: number;
  /** The delegator's ceiling when GSAP runs in dev mode. */
  devDelegatorCeiling: string;
  /** Capability names from weakest to strongest. */
  capabilityOrder: string[];
  defaultCapabilityCeiling: string;
  defaultTtlMs: number;
  maxTtlMs: number;
  defaultMaxCommands: number;
  maxCommandsCap: number;
  defaultCeremonyRequiredFor: string[];
  maxDelegationDepth: number;
  watchCheckpointMs: number;
  watchBufferEvents: number;
  watchPollMs: number;
  /** How long a background loop's lease lasts without renewal: the takeover time after a replica dies. */
  leaseTtlMs: number;
  eventRetentionMs: number;
  idempotencyTtlMs: number;
  /** REQUESTED rows older than this are left over from a crash and compensated. */
  createInflightMs: number;
  logLevel: string;
}

/** Raised for a variable that is present but unusable; the message names it. */
export class SettingsError extends Error {
  override name = "SettingsError";
}

type Env = Record<string, string | undefined>;

function str(env: Env, key: string, def: string): string {
  const v = env[key]?.trim();
  return v === undefined || v === "" ? def : v;
}

function int(env: Env, key: string, def: number, min: number, max: number): number {
  const raw = env[key]?.trim();
  if (raw === undefined || raw === "") return def;
  if (!/^-?\d+$/.test(raw)) throw new SettingsError(`${key} must be an integer, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new SettingsError(`${key} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/**
 * Streams per HTTP/2 connection, and how many of them Watch may hold: by
 * default all but a tenth, so a connection full of watchers still carries
 * unary calls (a stream over the HTTP/2 limit would wait, not fail).
 */
function streamLimits(env: Env): { maxConcurrentStreams: number; watchStreamsPerConnection: number } {
  const maxConcurrentStreams = int(env, "LIMIT_MAX_CONCURRENT_STREAMS", 1000, 2, 100_000);
  const reserve = Math.max(1, Math.floor(maxConcurrentStreams / 10));
  const watchStreamsPerConnection = int(env, "LIMIT_WATCH_STREAMS_PER_CONNECTION", maxConcurrentStreams - reserve, 1, 100_000);
  if (watchStreamsPerConnection >= maxConcurrentStreams) {
    throw new SettingsError(
      `LIMIT_WATCH_STREAMS_PER_CONNECTION (${watchStreamsPerConnection}) must be below LIMIT_MAX_CONCURRENT_STREAMS (${maxConcurrentStreams}): unary calls need streams on the same connection`,
    );
  }
  return { maxConcurrentStreams, watchStreamsPerConnection };
}

function list(env: Env, key: string, def: string[]): string[] {
  const raw = env[key];
  if (raw === undefined || raw.trim() === "") return def;
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/**
 * A list of browser origins. The CORS check compares the Origin header exactly, so an
 * entry with a path, a trailing slash or a wildcard would never match; refuse it here.
 */
function origins(env: Env, key: string, def: string[]): string[] {
  const out = list(env, key, def);
  for (const o of out) {
    let origin: string | undefined;
    try {
      origin = new URL(o).origin;
    } catch {
      origin = undefined;
    }
    if (origin !== o || !/^https?:\/\//.test(o)) {
      throw new SettingsError(`${key} entries must be origins like https://app.example.com:8443, got "${o}"`);
    }
  }
  return out;
}

function oneOf<T extends string>(env: Env, key: string, def: T, allowed: readonly T[]): T {
  const v = str(env, key, def);
  if (!(allowed as readonly string[]).includes(v)) {
    throw new SettingsError(`${key} must be one of ${allowed.join(", ")}, got "${v}"`);
  }
  return v as T;
}

const MINUTE = 60_000;

function bool(env: Env, key: string, def: boolean): boolean {
  const v = str(env, key, String(def)).toLowerCase();
  if (v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw new SettingsError(`${key} must be true or false, got "${v}"`);
}

function httpUrl(env: Env, key: string, def: string): string {
  const v = str(env, key, def).replace(/\/+$/, "");
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new SettingsError(`${key} must be an http(s) URL, got "${v}"`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new SettingsError(`${key} must be an http(s) URL, got "${v}"`);
  return v;
}

/** GSAP_REVOKE_PATH: a path template with {context_id} exactly once. */
function revokePath(env: Env): string {
  const v = str(env, "GSAP_REVOKE_PATH", "/governance/authorize/{context_id}/revoke/");
  if (!v.startsWith("/") || v.split("{context_id}").length !== 2 || /[?#\s]/.test(v)) {
    throw new SettingsError(`GSAP_REVOKE_PATH must be a path starting with / that contains {context_id} once, got "${v}"`);
  }
  return v;
}

function databaseUrl(env: Env): string {
  const url = str(env, "DATABASE_URL", "file:./data/llm-broker.db");
  if (!/^(file:.+|postgres(ql)?:\/\/.+)$/.test(url)) {
    throw new SettingsError("DATABASE_URL must be file:PATH (SQLite) or postgres://… (PostgreSQL)");
  }
  // Each connection to an in-memory SQLite database is a different database: migrations
  // would land in one and the broker would read another.
  if (/^file::memory:/.test(url)) throw new SettingsError("DATABASE_URL file::memory: is not supported; use a file path");
  return url;
}

/** Reads settings from `env` (by default `process.env`), applying documented defaults. */
export function loadSettings(env: Env = process.env): Settings {
  const capabilityOrder = list(env, "CAPABILITY_ORDER", ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"]);
  // "," alone splits into nothing; say so here rather than blame the ceilings checked below.
  if (capabilityOrder.length === 0) throw new SettingsError("CAPABILITY_ORDER must name at least one capability");
  if (new Set(capabilityOrder).size !== capabilityOrder.length) {
    throw new SettingsError("CAPABILITY_ORDER must not repeat a capability");
  }
  const capability = (key: string, def: string) => {
    const v = str(env, key, def);
    if (!capabilityOrder.includes(v)) {
      throw new SettingsError(`${key} must be one of CAPABILITY_ORDER (${capabilityOrder.join(", ")}), got "${v}"`);
    }
    return v;
  };
  const defaultTtlMinutes = int(env, "DEFAULT_DELEGATION_TTL_MINUTES", 60, 1, 525_600);
  const maxTtlMinutes = int(env, "MAX_DELEGATION_TTL_MINUTES", 480, 1, 525_600);
  if (defaultTtlMinutes > maxTtlMinutes) {
    throw new SettingsError("DEFAULT_DELEGATION_TTL_MINUTES must not exceed MAX_DELEGATION_TTL_MINUTES");
  }
  const defaultMaxCommands = int(env, "DEFAULT_MAX_COMMANDS", 500, 1, 10_000_000);
  const maxCommandsCap = int(env, "MAX_COMMANDS_CAP", 10_000, 1, 10_000_000);
  if (defaultMaxCommands > maxCommandsCap) {
    throw new SettingsError("DEFAULT_MAX_COMMANDS must not exceed MAX_COMMANDS_CAP");
  }
  const grpcPort = int(env, "LLM_BROKER_PORT", 8092, 0, 65535);
  const webPort = int(env, "LLM_BROKER_WEB_PORT", 8093, 0, 65535);
  if (grpcPort !== 0 && grpcPort === webPort) {
    throw new SettingsError(`LLM_BROKER_WEB_PORT must differ from LLM_BROKER_PORT (both ${grpcPort})`);
  }
  const settings: Settings = {
    host: str(env, "LLM_BROKER_HOST", "127.0.0.1"),
    grpcPort,
    webPort,
    databaseUrl: databaseUrl(env),
    corsOrigins: origins(env, "CORS_ORIGINS", ["http://localhost:3000", "http://localhost:8000"]),
    brokerDid: str(env, "BROKER_DID", "did:web:guildhouse.dev/service/llm-broker"),
    agentDidPrefix: str(env, "AGENT_DID_PREFIX", "did:web:guildhouse.dev/agent/"),
    authMode: oneOf(env, "AUTH_MODE", "dev", ["dev", "jwt", "mtls"] as const),
    registrar: oneOf(env, "AGENT_REGISTRAR", "auto", ["auto", "keycloak", "entra", "stub"] as const),
    gsapDriver: oneOf(env, "GSAP_DRIVER", "dev", ["dev", "http"] as const),
    auditDriver: oneOf(env, "AUDIT_DRIVER", "log", ["log", "chronicle"] as const),
    keycloak: {
      url: httpUrl(env, "KEYCLOAK_URL", "http://localhost:8080"),
      realm: str(env, "KEYCLOAK_REALM", "substrate"),
      adminClientId: str(env, "KEYCLOAK_ADMIN_CLIENT_ID", "llm-broker-admin"),
      adminClientSecret: str(env, "KEYCLOAK_ADMIN_CLIENT_SECRET", ""),
    },
    entra: {
      tenantId: str(env, "ENTRA_TENANT_ID", ""),
      clientId: str(env, "ENTRA_CLIENT_ID", ""),
      clientSecret: str(env, "ENTRA_CLIENT_SECRET", ""),
      authorityHost: httpUrl(env, "ENTRA_AUTHORITY_HOST", "https://login.microsoftonline.com"),
      graphUrl: httpUrl(env, "ENTRA_GRAPH_URL", "https://graph.microsoft.com/v1.0"),
      agentBlueprintId: str(env, "ENTRA_AGENT_BLUEPRINT_ID", ""),
      sponsorId: str(env, "ENTRA_SPONSOR_ID", ""),
      purgeDeleted: bool(env, "ENTRA_PURGE_DELETED", false),
    },
    gsap: {
      url: httpUrl(env, "GSAP_BROKER_URL", "http://localhost:8000"),
      bearerToken: str(env, "GSAP_BEARER_TOKEN", ""),
      corpusEntryCid: str(env, "GSAP_CORPUS_ENTRY_CID", "sha256:dev-jumphost"),
      revokePath: revokePath(env),
    },
    chronicle: { webhookUrl: str(env, "CHRONICLE_WEBHOOK_URL", "") },
    auditFailClosed: bool(env, "AUDIT_FAIL_CLOSED", false),
    auditFailClosedTimeoutMs: int(env, "AUDIT_FAIL_CLOSED_TIMEOUT_SECONDS", 5, 1, 300) * 1000,
    http: {
      timeoutMs: int(env, "HTTP_TIMEOUT_SECONDS", 10, 1, 300) * 1000,
      maxRetries: int(env, "HTTP_MAX_RETRIES", 3, 0, 10),
      caFile: str(env, "HTTP_CA_FILE", ""),
    },
    reconcileIntervalMs: int(env, "RECONCILE_INTERVAL_SECONDS", 60, 5, 86_400) * 1000,
    auth: {
      issuers: list(env, "AUTH_JWT_ISSUER", []),
      audience: str(env, "AUTH_JWT_AUDIENCE", ""),
      jwksUrl: str(env, "AUTH_JWKS_URL", ""),
      algorithms: list(env, "AUTH_JWT_ALGORITHMS", ["RS256", "PS256", "ES256", "EdDSA"]),
      clockSkewSeconds: int(env, "AUTH_CLOCK_SKEW_SECONDS", 30, 0, 300),
      didClaim: str(env, "AUTH_DID_CLAIM", "did"),
      rolesClaim: str(env, "AUTH_ROLES_CLAIM", "roles"),
      adminRole: str(env, "AUTH_ADMIN_ROLE", "llm-broker-admin"),
      tlsCertFile: str(env, "AUTH_TLS_CERT_FILE", ""),
      tlsKeyFile: str(env, "AUTH_TLS_KEY_FILE", ""),
      tlsClientCaFile: str(env, "AUTH_TLS_CLIENT_CA_FILE", ""),
      mtlsAdmins: list(env, "AUTH_MTLS_ADMINS", []),
    },
    limits: {
      maxRequestBytes: int(env, "LIMIT_MAX_REQUEST_BYTES", 262_144, 1024, 16 * 1024 * 1024),
      maxDeadlineMs: int(env, "LIMIT_MAX_DEADLINE_SECONDS", 60, 1, 3600) * 1000,
      ...streamLimits(env),
      watchStreamsPerPrincipal: int(env, "LIMIT_WATCH_STREAMS_PER_PRINCIPAL", 16, 1, 100_000),
      watchStreamsPerService: int(env, "LIMIT_WATCH_STREAMS_PER_SERVICE", 1000, 1, 1_000_000),
      createPerMinute: int(env, "RATE_LIMIT_CREATE_PER_MINUTE", 60, 1, 1_000_000),
      authorizePerSecond: int(env, "RATE_LIMIT_AUTHORIZE_PER_SECOND", 200, 1, 1_000_000),
    },
    devDelegatorCeiling: capability("DEV_DELEGATOR_CEILING", "CAP_MUTATE"),
    capabilityOrder,
    defaultCapabilityCeiling: capability("DEFAULT_CAPABILITY_CEILING", "CAP_MUTATE"),
    defaultTtlMs: defaultTtlMinutes * MINUTE,
    maxTtlMs: maxTtlMinutes * MINUTE,
    defaultMaxCommands,
    maxCommandsCap,
    defaultCeremonyRequiredFor: list(env, "DEFAULT_CEREMONY_REQUIRED_FOR", ["delete", "destroy", "drop"]),
    maxDelegationDepth: int(env, "MAX_DELEGATION_DEPTH", 1, 1, 16),
    watchCheckpointMs: int(env, "WATCH_CHECKPOINT_SECONDS", 15, 1, 3600) * 1000,
    watchBufferEvents: int(env, "WATCH_BUFFER_EVENTS", 1000, 10, 1_000_000),
    watchPollMs: int(env, "WATCH_POLL_MS", 1000, 10, 60_000),
    leaseTtlMs: int(env, "LEASE_TTL_MS", 1200, 300, 60_000),
    eventRetentionMs: int(env, "EVENT_RETENTION_HOURS", 168, 1, 87_600) * 60 * MINUTE,
    idempotencyTtlMs: int(env, "IDEMPOTENCY_TTL_HOURS", 24, 1, 8760) * 60 * MINUTE,
    createInflightMs: int(env, "CREATE_INFLIGHT_SECONDS", 120, 1, 86_400) * 1000,
    logLevel: oneOf(env, "LOG_LEVEL", "info", ["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
  };
  checkDrivers(settings);
  return settings;
}

/** A driver asked for by name must be configured: a start-up error, never a silent fallback. */
function checkDrivers(s: Settings): void {
  if (s.registrar === "keycloak" && s.keycloak.adminClientSecret === "") {
    throw new SettingsError("AGENT_REGISTRAR=keycloak needs KEYCLOAK_ADMIN_CLIENT_SECRET (and KEYCLOAK_URL, KEYCLOAK_REALM)");
  }
  if (s.registrar === "entra") {
    const missing = (["tenantId", "clientId", "clientSecret"] as const).filter((k) => s.entra[k] === "");
    if (missing.length > 0) {
      const names = { tenantId: "ENTRA_TENANT_ID", clientId: "ENTRA_CLIENT_ID", clientSecret: "ENTRA_CLIENT_SECRET" };
      throw new SettingsError(`AGENT_REGISTRAR=entra needs ${missing.map((k) => names[k]).join(", ")}`);
    }
  }
  if (s.entra.agentBlueprintId !== "" && s.entra.sponsorId === "") {
    throw new SettingsError("ENTRA_AGENT_BLUEPRINT_ID needs ENTRA_SPONSOR_ID (agent identities must have a sponsor)");
  }
  if (s.gsapDriver === "http" && s.gsap.bearerToken === "") {
    throw new SettingsError("GSAP_DRIVER=http needs GSAP_BEARER_TOKEN (and GSAP_BROKER_URL)");
  }
  if (s.auditDriver === "chronicle") {
    if (s.chronicle.webhookUrl === "") throw new SettingsError("AUDIT_DRIVER=chronicle needs CHRONICLE_WEBHOOK_URL");
    if (!/^https?:\/\/.+/.test(s.chronicle.webhookUrl)) throw new SettingsError("CHRONICLE_WEBHOOK_URL must be an http(s) URL");
  }
  if (s.authMode === "dev" && !isLoopback(s.host)) {
    throw new SettingsError(
      `AUTH_MODE=dev trusts a header for the caller's identity and listens only on loopback; LLM_BROKER_HOST=${s.host} needs AUTH_MODE=jwt or mtls`,
    );
  }
  if (s.authMode === "jwt") {
    const missing = [
      s.auth.issuers.length === 0 ? "AUTH_JWT_ISSUER" : "",
      s.auth.audience === "" ? "AUTH_JWT_AUDIENCE" : "",
      s.auth.jwksUrl === "" ? "AUTH_JWKS_URL" : "",
    ].filter((x) => x !== "");
    if (missing.length > 0) throw new SettingsError(`AUTH_MODE=jwt needs ${missing.join(", ")}`);
    if (!/^https?:\/\/.+/.test(s.auth.jwksUrl)) throw new SettingsError("AUTH_JWKS_URL must be an http(s) URL");
    const allowed = new Set(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]);
    const bad = s.auth.algorithms.filter((a) => !allowed.has(a));
    if (bad.length > 0 || s.auth.algorithms.length === 0) {
      throw new SettingsError(`AUTH_JWT_ALGORITHMS may list only asymmetric algorithms (${[...allowed].join(", ")}); got ${bad.join(", ") || "none"}`);
    }
  }
  if (s.authMode === "mtls") {
    const missing = [
      s.auth.tlsCertFile === "" ? "AUTH_TLS_CERT_FILE" : "",
      s.auth.tlsKeyFile === "" ? "AUTH_TLS_KEY_FILE" : "",
      s.auth.tlsClientCaFile === "" ? "AUTH_TLS_CLIENT_CA_FILE" : "",
    ].filter((x) => x !== "");
    if (missing.length > 0) throw new SettingsError(`AUTH_MODE=mtls needs ${missing.join(", ")}`);
  }
  if (s.auditFailClosed && s.auditDriver !== "chronicle") {
    throw new SettingsError("AUDIT_FAIL_CLOSED=true needs AUDIT_DRIVER=chronicle");
  }
}

/** Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
