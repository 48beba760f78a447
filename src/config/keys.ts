/**
 * The environment variables the broker reads: the one list. The parsers in
 * this folder accept only a `SettingKey`, so a variable read anywhere else
 * fails to compile; `.env.example` documents exactly these (a test checks).
 */

export const SETTING_KEYS = [
  // Service
  "LLM_BROKER_HOST",
  "LLM_BROKER_PORT",
  "LLM_BROKER_WEB_PORT",
  "CORS_ORIGINS",
  "GRPC_REFLECTION",
  "DASHBOARD_ENABLED",
  "BROKER_DID",
  "DATABASE_URL",
  "ALLOW_DEV_DRIVERS",
  // Identity provider / agent registrar
  "AGENT_REGISTRAR",
  "AGENT_DID_PREFIX",
  "KEYCLOAK_URL",
  "KEYCLOAK_REALM",
  "KEYCLOAK_ADMIN_CLIENT_ID",
  "KEYCLOAK_ADMIN_CLIENT_SECRET",
  "ENTRA_TENANT_ID",
  "ENTRA_CLIENT_ID",
  "ENTRA_CLIENT_SECRET",
  "ENTRA_AUTHORITY_HOST",
  "ENTRA_GRAPH_URL",
  "ENTRA_AGENT_BLUEPRINT_ID",
  "ENTRA_SPONSOR_ID",
  "ENTRA_PURGE_DELETED",
  // GSAP
  "GSAP_DRIVER",
  "DEV_DELEGATOR_CEILING",
  "GSAP_BROKER_URL",
  "GSAP_BEARER_TOKEN",
  "GSAP_CORPUS_ENTRY_CID",
  "GSAP_REVOKE_PATH",
  "GSAP_CONTEXT_CACHE_SECONDS",
  "GSAP_CONTEXT_MAX_STALENESS_SECONDS",
  "GSAP_CONTEXT_STALE_POLICY",
  "GSAP_APPROVAL_TIMEOUT_SECONDS",
  "GSAP_APPROVAL_POLL_MAX_SECONDS",
  // Audit
  "AUDIT_DRIVER",
  "CHRONICLE_WEBHOOK_URL",
  "AUDIT_FAIL_CLOSED",
  "AUDIT_FAIL_CLOSED_TIMEOUT_SECONDS",
  "AUDIT_COMMANDS",
  "AUDIT_COMMANDS_IN_CLEAR",
  "CEREMONY_TTL_SECONDS",
  // Outbound HTTP
  "HTTP_TIMEOUT_SECONDS",
  "HTTP_MAX_RETRIES",
  "HTTP_CA_FILE",
  // Authentication
  "AUTH_MODE",
  "AUTH_JWT_ISSUER",
  "AUTH_JWT_AUDIENCE",
  "AUTH_JWKS_URL",
  "AUTH_JWT_ALGORITHMS",
  "AUTH_CLOCK_SKEW_SECONDS",
  "AUTH_DID_CLAIM",
  "AUTH_ROLES_CLAIM",
  "AUTH_ADMIN_ROLE",
  "AUTH_TLS_CERT_FILE",
  "AUTH_TLS_KEY_FILE",
  "AUTH_TLS_CLIENT_CA_FILE",
  "AUTH_MTLS_ADMINS",
  // Limits
  "LIMIT_MAX_REQUEST_BYTES",
  "LIMIT_MAX_DEADLINE_SECONDS",
  "LIMIT_MAX_CONCURRENT_STREAMS",
  "LIMIT_WATCH_STREAMS_PER_CONNECTION",
  "LIMIT_WATCH_STREAMS_PER_PRINCIPAL",
  "LIMIT_WATCH_STREAMS_PER_SERVICE",
  "RATE_LIMIT_CREATE_PER_MINUTE",
  "RATE_LIMIT_AUTHORIZE_PER_SECOND",
  // Delegation policy
  "CAPABILITY_ORDER",
  "DEFAULT_CAPABILITY_CEILING",
  "DEFAULT_DELEGATION_TTL_MINUTES",
  "MAX_DELEGATION_TTL_MINUTES",
  "DEFAULT_MAX_COMMANDS",
  "MAX_COMMANDS_CAP",
  "DEFAULT_CEREMONY_REQUIRED_FOR",
  "MAX_DELEGATION_DEPTH",
  // Watch, events, maintenance, logging
  "WATCH_CHECKPOINT_SECONDS",
  "WATCH_BUFFER_EVENTS",
  "WATCH_POLL_MS",
  "READ_MODEL_MAX_AGE_MS",
  "LEASE_TTL_MS",
  "SHUTDOWN_GRACE_SECONDS",
  "EVENT_RETENTION_HOURS",
  "IDEMPOTENCY_TTL_HOURS",
  "CREATE_INFLIGHT_SECONDS",
  "RECONCILE_INTERVAL_SECONDS",
  "LOG_LEVEL",
  // Observability: metrics, tracing, request context in logs
  "METRICS_ENABLED",
  "LOG_REQUEST_CONTEXT",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_SERVICE_NAME",
] as const;

export type SettingKey = (typeof SETTING_KEYS)[number];

/**
 * The broker's namespaces: a variable starting with one of them that is not
 * in SETTING_KEYS is most likely a typo, and is warned about at start. First
 * words that other programs use as well (DATABASE_, LOG_, DEFAULT_, MAX_, …)
 * are left out so that their variables raise no false alarm, and so is
 * OTEL_: the OpenTelemetry SDK reads many more of them (OTEL_TRACES_SAMPLER,
 * OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES, …) than the broker does.
 */
export const SETTING_PREFIXES = [
  "LLM_BROKER_",
  "AGENT_",
  "AUTH_",
  "KEYCLOAK_",
  "ENTRA_",
  "GSAP_",
  "AUDIT_",
  "CHRONICLE_",
  "CEREMONY_",
  "HTTP_",
  "LIMIT_",
  "RATE_LIMIT_",
  "WATCH_",
  "DASHBOARD_",
] as const;

/** Variables in those namespaces that belong to other programs by convention (the broker does not read them). */
export const FOREIGN_KEYS: readonly string[] = ["HTTP_PROXY"];

/** Variables whose value is a secret: never printed (DATABASE_URL's password is redacted separately). */
export const SECRET_KEYS = ["KEYCLOAK_ADMIN_CLIENT_SECRET", "ENTRA_CLIENT_SECRET", "GSAP_BEARER_TOKEN"] as const satisfies readonly SettingKey[];
