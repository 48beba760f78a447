/**
 * Typed settings read from the environment. `.env.example` documents every
 * variable; this folder is the single place that parses them (the variables
 * are listed in keys.ts, the drivers chosen in drivers.ts).
 */
import { checkDrivers, resolveDrivers } from "./drivers.js";
import type { SettingKey } from "./keys.js";
import { type Env, bool, httpUrl, int, list, oneOf, str } from "./parse.js";
import { SettingsError } from "./settings-error.js";

export { SettingsError } from "./settings-error.js";
export { isLoopback } from "./drivers.js";

/** The drivers, as resolved: `auto` never reaches a Settings object. */
export type RegistrarDriver = "keycloak" | "entra" | "stub";
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
  /** Serve gRPC server reflection (v1 and v1alpha) on the gRPC port. By default, true. */
  grpcReflection: boolean;
  /** Serve the browser dashboard at / on the web port (from dist/web). By default, true. */
  dashboardEnabled: boolean;
  brokerDid: string;
  agentDidPrefix: string;
  authMode: AuthMode;
  registrar: RegistrarDriver;
  gsapDriver: GsapDriver;
  auditDriver: AuditDriver;
  /** Let jwt/mtls authentication start with dev drivers (stub, GSAP dev, audit log). By default, false. */
  allowDevDrivers: boolean;
  /** url and adminClientSecret are empty unless set (then both are, and the registrar is keycloak). */
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
    /** Empty unless set (then so is bearerToken, and the driver is http). */
    url: string;
    bearerToken: string;
    corpusEntryCid: string;
    /** Where a delegated context is revoked (relative to url; {context_id} is replaced). */
    revokePath: string;
  };
  chronicle: { webhookUrl: string };
  /** Human approval of one command (AuthorizeCommand CEREMONY_REQUIRED). */
  ceremony: {
    /** How long a requested ceremony may be approved, and an approval used. */
    ttlMs: number;
  };
  /** Which AuthorizeCommand decisions are recorded in the audit log. */
  auditCommands: "none" | "refusals" | "all";
  /** Put the command itself in audit records (otherwise only its SHA-256). */
  auditCommandsInClear: boolean;
  /** Live checks of delegators' access contexts at GSAP, and its approval flow. */
  gsapChecks: {
    /** How long a delegator context's last answer is fresh; refreshed in the background after. */
    contextCacheMs: number;
    /** With GSAP unreachable, how long the last answer may be used. */
    contextMaxStalenessMs: number;
    /** Past that: deny commands (strict) or allow them (lenient). */
    stalePolicy: "strict" | "lenient";
    /** How long a delegated-context request may wait for GSAP's approval flow. */
    approvalTimeoutMs: number;
    /** Longest wait between polls of a pending approval. */
    approvalPollMaxMs: number;
  };
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
  /** How long GetDelegation may answer a delegation from memory before reading it again (0: always from the database). */
  readModelMaxAgeMs: number;
  /** How long a background loop's lease lasts without renewal: the takeover time after a replica dies. */
  leaseTtlMs: number;
  /** How long a shutdown lets calls in flight finish before answering them UNAVAILABLE. */
  shutdownGraceMs: number;
  eventRetentionMs: number;
  idempotencyTtlMs: number;
  /** REQUESTED rows older than this are left over from a crash and compensated. */
  createInflightMs: number;
  logLevel: string;
  observability: {
    /** Serve Prometheus metrics at /metrics on the web port. By default, true. */
    metricsEnabled: boolean;
    /** Where spans go, OTLP over HTTP; "" (the default) turns tracing off. */
    otlpTracesUrl: string;
    /** service.name of the spans. By default, llm-principal-broker. */
    serviceName: string;
    /** Carry the request id into every log line of a call, the use cases' too, even with tracing off. By default, false. */
    logRequestContext: boolean;
  };
}

/** The live checks of delegator contexts and the approval flow at GSAP. */
function gsapChecks(env: Env): Settings["gsapChecks"] {
  const contextCacheMs = int(env, "GSAP_CONTEXT_CACHE_SECONDS", 30, 1, 3600) * 1000;
  const contextMaxStalenessMs = int(env, "GSAP_CONTEXT_MAX_STALENESS_SECONDS", 300, 1, 86_400) * 1000;
  if (contextMaxStalenessMs < contextCacheMs) {
    throw new SettingsError("GSAP_CONTEXT_MAX_STALENESS_SECONDS must not be below GSAP_CONTEXT_CACHE_SECONDS");
  }
  return {
    contextCacheMs,
    contextMaxStalenessMs,
    stalePolicy: oneOf(env, "GSAP_CONTEXT_STALE_POLICY", "strict", ["strict", "lenient"] as const),
    approvalTimeoutMs: int(env, "GSAP_APPROVAL_TIMEOUT_SECONDS", 900, 1, 86_400) * 1000,
    approvalPollMaxMs: int(env, "GSAP_APPROVAL_POLL_MAX_SECONDS", 10, 1, 300) * 1000,
  };
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

/**
 * A list of browser origins. The CORS check compares the Origin header exactly, so an
 * entry with a path, a trailing slash or a wildcard would never match; refuse it here.
 */
function origins(env: Env, key: SettingKey, def: string[]): string[] {
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

const MINUTE = 60_000;

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

/**
 * Metrics, tracing and the request context of log lines. Tracing is on when
 * an OTLP endpoint is set: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else
 * OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces (as the OpenTelemetry SDKs read them).
 */
function observability(env: Env): Settings["observability"] {
  const endpoint = httpUrl(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "");
  const tracesEndpoint = httpUrl(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "");
  return {
    metricsEnabled: bool(env, "METRICS_ENABLED", true),
    otlpTracesUrl: tracesEndpoint !== "" ? tracesEndpoint : endpoint === "" ? "" : `${endpoint}/v1/traces`,
    serviceName: str(env, "OTEL_SERVICE_NAME", "llm-principal-broker"),
    logRequestContext: bool(env, "LOG_REQUEST_CONTEXT", false),
  };
}

/** Reads settings from `env` (by default `process.env`), applying documented defaults. */
export function loadSettings(env: Env = process.env): Settings {
  const capabilityOrder = list(env, "CAPABILITY_ORDER", ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"]);
  // "," alone splits into nothing; say so here rather than blame the ceilings checked below.
  if (capabilityOrder.length === 0) throw new SettingsError("CAPABILITY_ORDER must name at least one capability");
  if (new Set(capabilityOrder).size !== capabilityOrder.length) {
    throw new SettingsError("CAPABILITY_ORDER must not repeat a capability");
  }
  const capability = (key: SettingKey, def: string) => {
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
    grpcReflection: bool(env, "GRPC_REFLECTION", true),
    dashboardEnabled: bool(env, "DASHBOARD_ENABLED", true),
    brokerDid: str(env, "BROKER_DID", "did:web:guildhouse.dev/service/llm-broker"),
    agentDidPrefix: str(env, "AGENT_DID_PREFIX", "did:web:guildhouse.dev/agent/"),
    ...resolveDrivers(env),
    allowDevDrivers: bool(env, "ALLOW_DEV_DRIVERS", false),
    keycloak: {
      url: httpUrl(env, "KEYCLOAK_URL", ""),
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
      url: httpUrl(env, "GSAP_BROKER_URL", ""),
      bearerToken: str(env, "GSAP_BEARER_TOKEN", ""),
      corpusEntryCid: str(env, "GSAP_CORPUS_ENTRY_CID", "sha256:dev-jumphost"),
      revokePath: revokePath(env),
    },
    chronicle: { webhookUrl: str(env, "CHRONICLE_WEBHOOK_URL", "") },
    ceremony: { ttlMs: int(env, "CEREMONY_TTL_SECONDS", 300, 10, 86_400) * 1000 },
    auditCommands: oneOf(env, "AUDIT_COMMANDS", "refusals", ["none", "refusals", "all"] as const),
    auditCommandsInClear: bool(env, "AUDIT_COMMANDS_IN_CLEAR", false),
    gsapChecks: gsapChecks(env),
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
    readModelMaxAgeMs: int(env, "READ_MODEL_MAX_AGE_MS", 1000, 0, 60_000),
    leaseTtlMs: int(env, "LEASE_TTL_MS", 1200, 300, 60_000),
    shutdownGraceMs: int(env, "SHUTDOWN_GRACE_SECONDS", 10, 0, 3600) * 1000,
    eventRetentionMs: int(env, "EVENT_RETENTION_HOURS", 168, 1, 87_600) * 60 * MINUTE,
    idempotencyTtlMs: int(env, "IDEMPOTENCY_TTL_HOURS", 24, 1, 8760) * 60 * MINUTE,
    createInflightMs: int(env, "CREATE_INFLIGHT_SECONDS", 120, 1, 86_400) * 1000,
    logLevel: oneOf(env, "LOG_LEVEL", "info", ["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
    observability: observability(env),
  };
  checkDrivers(settings);
  return settings;
}
