import { describe, expect, it } from "vitest";
import { redactDatabaseUrl, redactSecrets } from "../../src/config/redact.js";
import { SettingsError, loadSettings } from "../../src/config/settings.js";
import { settingsWarnings } from "../../src/config/warnings.js";

const MIN = 60_000;
const HOUR = 60 * MIN;

/** The SettingsError loadSettings(env) throws; fails the test otherwise. */
function errorOf(env: Record<string, string>): SettingsError {
  try {
    loadSettings(env);
  } catch (err) {
    expect(err).toBeInstanceOf(SettingsError);
    return err as SettingsError;
  }
  throw new Error(`expected a SettingsError for ${JSON.stringify(env)}`);
}

describe("loadSettings defaults", () => {
  it("applies every documented default to an empty environment", () => {
    expect(loadSettings({})).toEqual({
      host: "127.0.0.1",
      grpcPort: 8092,
      webPort: 8093,
      databaseUrl: "file:./data/llm-broker.db",
      corsOrigins: ["http://localhost:3000", "http://localhost:8000"],
      brokerDid: "did:web:guildhouse.dev/service/llm-broker",
      agentDidPrefix: "did:web:guildhouse.dev/agent/",
      authMode: "dev",
      registrar: "stub",
      gsapDriver: "dev",
      auditDriver: "log",
      allowDevDrivers: false,
      devDelegatorCeiling: "CAP_MUTATE",
      capabilityOrder: ["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"],
      defaultCapabilityCeiling: "CAP_MUTATE",
      defaultTtlMs: 60 * MIN,
      maxTtlMs: 480 * MIN,
      defaultMaxCommands: 500,
      maxCommandsCap: 10_000,
      defaultCeremonyRequiredFor: ["delete", "destroy", "drop"],
      maxDelegationDepth: 1,
      watchCheckpointMs: 15_000,
      watchBufferEvents: 1000,
      watchPollMs: 1000,
      readModelMaxAgeMs: 1000,
      leaseTtlMs: 1200,
      shutdownGraceMs: 10_000,
      dashboardEnabled: true,
      grpcReflection: true,
      observability: { logRequestContext: false, metricsEnabled: true, otlpTracesUrl: "", serviceName: "llm-principal-broker" },
      ceremony: { ttlMs: 300_000 },
      auditCommands: "refusals",
      auditCommandsInClear: false,
      gsapChecks: { contextCacheMs: 30_000, contextMaxStalenessMs: 300_000, stalePolicy: "strict", approvalTimeoutMs: 900_000, approvalPollMaxMs: 10_000 },
      eventRetentionMs: 168 * HOUR,
      idempotencyTtlMs: 24 * HOUR,
      createInflightMs: 120_000,
      logLevel: "info",
      keycloak: { url: "", realm: "substrate", adminClientId: "llm-broker-admin", adminClientSecret: "" },
      entra: {
        tenantId: "",
        clientId: "",
        clientSecret: "",
        authorityHost: "https://login.microsoftonline.com",
        graphUrl: "https://graph.microsoft.com/v1.0",
        agentBlueprintId: "",
        sponsorId: "",
        purgeDeleted: false,
      },
      gsap: {
        url: "",
        bearerToken: "",
        corpusEntryCid: "sha256:dev-jumphost",
        revokePath: "/governance/authorize/{context_id}/revoke/",
      },
      chronicle: { webhookUrl: "" },
      auditFailClosed: false,
      auditFailClosedTimeoutMs: 5000,
      http: { timeoutMs: 10_000, maxRetries: 3, caFile: "" },
      reconcileIntervalMs: 60_000,
      auth: {
        issuers: [],
        audience: "",
        jwksUrl: "",
        algorithms: ["RS256", "PS256", "ES256", "EdDSA"],
        clockSkewSeconds: 30,
        didClaim: "did",
        rolesClaim: "roles",
        adminRole: "llm-broker-admin",
        tlsCertFile: "",
        tlsKeyFile: "",
        tlsClientCaFile: "",
        mtlsAdmins: [],
      },
      limits: {
        maxRequestBytes: 262_144,
        maxDeadlineMs: 60_000,
        maxConcurrentStreams: 1000,
        watchStreamsPerConnection: 900,
        watchStreamsPerPrincipal: 16,
        watchStreamsPerService: 1000,
        createPerMinute: 60,
        authorizePerSecond: 200,
      },
    });
  });

  it("treats empty and blank values as unset", () => {
    const blank = loadSettings({ LLM_BROKER_PORT: "", LLM_BROKER_HOST: "  ", CAPABILITY_ORDER: " ", CORS_ORIGINS: "" });
    expect(blank.grpcPort).toBe(8092);
    expect(blank.host).toBe("127.0.0.1");
    expect(blank.capabilityOrder).toEqual(["CAP_READ", "CAP_MUTATE", "CAP_ADMIN"]);
    expect(blank.corsOrigins).toEqual(["http://localhost:3000", "http://localhost:8000"]);
  });

  it("reads process.env when no environment is passed", () => {
    const before = process.env.LLM_BROKER_HOST;
    process.env.LLM_BROKER_HOST = "127.0.0.2";
    try {
      expect(loadSettings().host).toBe("127.0.0.2");
    } finally {
      if (before === undefined) delete process.env.LLM_BROKER_HOST;
      else process.env.LLM_BROKER_HOST = before;
    }
  });
});

describe("loadSettings values", () => {
  it("converts units: minutes, seconds and hours to milliseconds", () => {
    const s = loadSettings({
      DEFAULT_DELEGATION_TTL_MINUTES: "2",
      MAX_DELEGATION_TTL_MINUTES: "3",
      WATCH_CHECKPOINT_SECONDS: "4",
      EVENT_RETENTION_HOURS: "5",
      IDEMPOTENCY_TTL_HOURS: "6",
      CREATE_INFLIGHT_SECONDS: "7",
    });
    expect(s.defaultTtlMs).toBe(2 * MIN);
    expect(s.maxTtlMs).toBe(3 * MIN);
    expect(s.watchCheckpointMs).toBe(4000);
    expect(s.eventRetentionMs).toBe(5 * HOUR);
    expect(s.idempotencyTtlMs).toBe(6 * HOUR);
    expect(s.createInflightMs).toBe(7000);
  });

  it("trims values and list entries and drops empty list entries", () => {
    const s = loadSettings({
      LLM_BROKER_HOST: " ::1 ",
      LLM_BROKER_PORT: " 9000 ",
      CORS_ORIGINS: " https://a.example , ,https://b.example:8443 ",
      DEFAULT_CEREMONY_REQUIRED_FOR: "git push, terraform apply,",
    });
    expect(s.host).toBe("::1");
    expect(s.grpcPort).toBe(9000);
    expect(s.corsOrigins).toEqual(["https://a.example", "https://b.example:8443"]);
    expect(s.defaultCeremonyRequiredFor).toEqual(["git push", "terraform apply"]);
  });

  it("accepts a custom capability order and ceilings drawn from it", () => {
    const s = loadSettings({
      CAPABILITY_ORDER: "VIEW,EDIT",
      DEFAULT_CAPABILITY_CEILING: "VIEW",
      DEV_DELEGATOR_CEILING: "EDIT",
    });
    expect(s.capabilityOrder).toEqual(["VIEW", "EDIT"]);
    expect(s.defaultCapabilityCeiling).toBe("VIEW");
    expect(s.devDelegatorCeiling).toBe("EDIT");
  });

  it("accepts every registrar name and log level", () => {
    const keycloak = { KEYCLOAK_URL: "https://kc.example", KEYCLOAK_ADMIN_CLIENT_SECRET: "kc-secret" };
    const entra = { ENTRA_TENANT_ID: "t", ENTRA_CLIENT_ID: "c", ENTRA_CLIENT_SECRET: "s" };
    for (const r of ["keycloak", "entra", "stub"]) {
      expect(loadSettings({ AGENT_REGISTRAR: r, ...keycloak, ...entra }).registrar).toBe(r);
    }
    expect(loadSettings({ AGENT_REGISTRAR: "auto", ...keycloak }).registrar).toBe("keycloak");
    expect(loadSettings({ AGENT_REGISTRAR: "auto", ...entra }).registrar).toBe("entra");
    expect(loadSettings({ AGENT_REGISTRAR: "auto" }).registrar).toBe("stub");
    for (const l of ["trace", "debug", "info", "warn", "error", "fatal", "silent"]) {
      expect(loadSettings({ LOG_LEVEL: l }).logLevel).toBe(l);
    }
  });

  it("accepts both ports 0 (pick free ports) and the bounds of each integer", () => {
    const zero = loadSettings({ LLM_BROKER_PORT: "0", LLM_BROKER_WEB_PORT: "0" });
    expect([zero.grpcPort, zero.webPort]).toEqual([0, 0]);
    expect(loadSettings({ LLM_BROKER_PORT: "65535" }).grpcPort).toBe(65535);
    expect(loadSettings({ MAX_DELEGATION_DEPTH: "16" }).maxDelegationDepth).toBe(16);
    expect(loadSettings({ DEFAULT_DELEGATION_TTL_MINUTES: "480" }).defaultTtlMs).toBe(480 * MIN);
    expect(loadSettings({ DEFAULT_MAX_COMMANDS: "10000" }).defaultMaxCommands).toBe(10_000);
  });
});

describe("GSAP_REVOKE_PATH", () => {
  it("takes a path template with {context_id} once", () => {
    expect(loadSettings({ GSAP_REVOKE_PATH: "/v2/contexts/{context_id}/revoke" }).gsap.revokePath).toBe("/v2/contexts/{context_id}/revoke");
  });

  it.each(["governance/{context_id}/revoke/", "/governance/revoke/", "/a/{context_id}/{context_id}/", "/a/{context_id}?x=1", "/a /{context_id}/"])(
    "refuses %s, naming the variable",
    (value) => {
      expect(() => loadSettings({ GSAP_REVOKE_PATH: value })).toThrow(/GSAP_REVOKE_PATH/);
    },
  );
});

describe("loadSettings errors name the variable", () => {
  // [variable, lowest valid, highest valid]
  const ints: [string, number, number][] = [
    ["LLM_BROKER_PORT", 0, 65535],
    ["LLM_BROKER_WEB_PORT", 0, 65535],
    ["DEFAULT_DELEGATION_TTL_MINUTES", 1, 525_600],
    ["MAX_DELEGATION_TTL_MINUTES", 1, 525_600],
    ["DEFAULT_MAX_COMMANDS", 1, 10_000_000],
    ["MAX_COMMANDS_CAP", 1, 10_000_000],
    ["MAX_DELEGATION_DEPTH", 1, 16],
    ["WATCH_CHECKPOINT_SECONDS", 1, 3600],
    ["WATCH_BUFFER_EVENTS", 10, 1_000_000],
    ["WATCH_POLL_MS", 10, 60_000],
    ["EVENT_RETENTION_HOURS", 1, 87_600],
    ["IDEMPOTENCY_TTL_HOURS", 1, 8760],
    ["CREATE_INFLIGHT_SECONDS", 1, 86_400],
  ];

  // Raising one bound alone can trip a cross-variable check; lift the partner too.
  const partners: Record<string, Record<string, string>> = {
    DEFAULT_DELEGATION_TTL_MINUTES: { MAX_DELEGATION_TTL_MINUTES: "525600" },
    MAX_DELEGATION_TTL_MINUTES: { DEFAULT_DELEGATION_TTL_MINUTES: "1" },
    DEFAULT_MAX_COMMANDS: { MAX_COMMANDS_CAP: "10000000" },
    MAX_COMMANDS_CAP: { DEFAULT_MAX_COMMANDS: "1" },
    LLM_BROKER_PORT: { LLM_BROKER_WEB_PORT: "1" },
  };

  for (const [key, min, max] of ints) {
    it(`${key}: accepts ${min}..${max}, rejects non-integers and values outside`, () => {
      const extra = partners[key] ?? {};
      expect(() => loadSettings({ ...extra, [key]: String(min) })).not.toThrow();
      expect(() => loadSettings({ ...extra, [key]: String(max) })).not.toThrow();
      for (const bad of ["abc", "1.5", "1e3", "+5", "0x10", "5 minutes"]) {
        const err = errorOf({ [key]: bad });
        expect(err.message).toContain(key);
        expect(err.message).toContain("integer");
      }
      for (const bad of [min - 1, max + 1]) {
        const err = errorOf({ ...extra, [key]: String(bad) });
        expect(err.message).toContain(key);
        expect(err.message).toContain(`between ${min} and ${max}`);
      }
    });
  }

  const enums: [string, string[]][] = [
    ["AUTH_MODE", ["jwt", "DEV"]],
    ["AGENT_REGISTRAR", ["okta", "Stub"]],
    ["GSAP_DRIVER", ["http", "real"]],
    ["AUDIT_DRIVER", ["chronicle", "LOG"]],
    ["LOG_LEVEL", ["verbose", "INFO"]],
  ];
  for (const [key, bads] of enums) {
    it(`${key}: rejects a value outside its set`, () => {
      for (const bad of bads) {
        const err = errorOf({ [key]: bad });
        expect(err.message).toContain(key);
        expect(err.message).toContain(bad);
      }
    });
  }

  for (const key of ["DEFAULT_CAPABILITY_CEILING", "DEV_DELEGATOR_CEILING"]) {
    it(`${key}: rejects a capability not in CAPABILITY_ORDER`, () => {
      const err = errorOf({ [key]: "CAP_ROOT" });
      expect(err.message).toContain(key);
      expect(err.message).toContain("CAP_ROOT");
    });

    it(`${key}: is checked against a custom CAPABILITY_ORDER, so its default can become invalid`, () => {
      const err = errorOf({ CAPABILITY_ORDER: "VIEW,EDIT", DEFAULT_CAPABILITY_CEILING: "VIEW", DEV_DELEGATOR_CEILING: "EDIT", [key]: "CAP_MUTATE" });
      expect(err.message).toContain(key);
    });
  }

  it("CAPABILITY_ORDER: rejects a repeated capability", () => {
    expect(errorOf({ CAPABILITY_ORDER: "CAP_READ,CAP_MUTATE,CAP_READ" }).message).toContain("CAPABILITY_ORDER");
    expect(errorOf({ CAPABILITY_ORDER: "CAP_READ, CAP_MUTATE ,CAP_MUTATE" }).message).toContain("CAPABILITY_ORDER");
  });

  it("CAPABILITY_ORDER: rejects a list that names no capability", () => {
    expect(errorOf({ CAPABILITY_ORDER: " , ," }).message).toMatch(/^CAPABILITY_ORDER must name at least one/);
  });

  it("DEFAULT_DELEGATION_TTL_MINUTES: must not exceed MAX_DELEGATION_TTL_MINUTES", () => {
    expect(() => loadSettings({ DEFAULT_DELEGATION_TTL_MINUTES: "30", MAX_DELEGATION_TTL_MINUTES: "30" })).not.toThrow();
    const err = errorOf({ DEFAULT_DELEGATION_TTL_MINUTES: "31", MAX_DELEGATION_TTL_MINUTES: "30" });
    expect(err.message).toContain("DEFAULT_DELEGATION_TTL_MINUTES");
    expect(err.message).toContain("MAX_DELEGATION_TTL_MINUTES");
    // The defaults interact too: a max below the default 60 needs a lower default.
    expect(errorOf({ MAX_DELEGATION_TTL_MINUTES: "59" }).message).toContain("DEFAULT_DELEGATION_TTL_MINUTES");
  });

  it("DEFAULT_MAX_COMMANDS: must not exceed MAX_COMMANDS_CAP", () => {
    expect(() => loadSettings({ DEFAULT_MAX_COMMANDS: "50", MAX_COMMANDS_CAP: "50" })).not.toThrow();
    const err = errorOf({ DEFAULT_MAX_COMMANDS: "51", MAX_COMMANDS_CAP: "50" });
    expect(err.message).toContain("DEFAULT_MAX_COMMANDS");
    expect(err.message).toContain("MAX_COMMANDS_CAP");
    expect(errorOf({ MAX_COMMANDS_CAP: "499" }).message).toContain("DEFAULT_MAX_COMMANDS");
  });

  it("LLM_BROKER_WEB_PORT: must differ from a fixed LLM_BROKER_PORT", () => {
    const err = errorOf({ LLM_BROKER_PORT: "9000", LLM_BROKER_WEB_PORT: "9000" });
    expect(err.message).toContain("LLM_BROKER_WEB_PORT");
    expect(errorOf({ LLM_BROKER_PORT: "8093" }).message).toContain("LLM_BROKER_PORT");
  });

  it("a driver asked for by name must be configured: start-up error naming what is missing", () => {
    expect(errorOf({ AGENT_REGISTRAR: "keycloak" }).message).toBe("AGENT_REGISTRAR=keycloak needs KEYCLOAK_URL, KEYCLOAK_ADMIN_CLIENT_SECRET");
    const entra = errorOf({ AGENT_REGISTRAR: "entra", ENTRA_TENANT_ID: "t" }).message;
    expect(entra).toContain("ENTRA_CLIENT_ID");
    expect(entra).toContain("ENTRA_CLIENT_SECRET");
    expect(entra).not.toContain("ENTRA_TENANT_ID");
    expect(errorOf({ ENTRA_AGENT_BLUEPRINT_ID: "bp" }).message).toContain("ENTRA_SPONSOR_ID");
    expect(errorOf({ GSAP_DRIVER: "http" }).message).toBe("GSAP_DRIVER=http needs GSAP_BROKER_URL, GSAP_BEARER_TOKEN");
    expect(errorOf({ AUDIT_DRIVER: "chronicle" }).message).toBe("AUDIT_DRIVER=chronicle needs CHRONICLE_WEBHOOK_URL");
    expect(errorOf({ AUDIT_DRIVER: "chronicle", CHRONICLE_WEBHOOK_URL: "ftp://x" }).message).toContain("CHRONICLE_WEBHOOK_URL");
    expect(errorOf({ CHRONICLE_WEBHOOK_URL: "ftp://x" }).message).toContain("CHRONICLE_WEBHOOK_URL");
    expect(errorOf({ AUDIT_FAIL_CLOSED: "true" }).message).toContain("AUDIT_DRIVER=chronicle");
    expect(errorOf({ AUDIT_FAIL_CLOSED: "true" }).message).toContain("CHRONICLE_WEBHOOK_URL");
    expect(errorOf({ AUDIT_FAIL_CLOSED: "yes" }).message).toContain("AUDIT_FAIL_CLOSED");
    expect(errorOf({ KEYCLOAK_URL: "keycloak:8080" }).message).toContain("KEYCLOAK_URL");
    expect(errorOf({ GSAP_BROKER_URL: "gsap.example" }).message).toContain("GSAP_BROKER_URL");
    // Configured, they load; URLs lose trailing slashes.
    const s = loadSettings({
      GSAP_DRIVER: "http",
      GSAP_BEARER_TOKEN: "tok",
      GSAP_BROKER_URL: "https://gsap.example/",
      AUDIT_DRIVER: "chronicle",
      CHRONICLE_WEBHOOK_URL: "https://chronicle.example/hook",
      AUDIT_FAIL_CLOSED: "1",
    });
    expect(s.gsap.url).toBe("https://gsap.example");
    expect(s.auditFailClosed).toBe(true);
  });

  it("AUTH_MODE: dev listens only on loopback; jwt and mtls need their settings; only asymmetric algorithms", () => {
    expect(errorOf({ LLM_BROKER_HOST: "0.0.0.0" }).message).toContain("AUTH_MODE=dev");
    expect(loadSettings({ LLM_BROKER_HOST: "127.0.0.1" }).host).toBe("127.0.0.1");
    const jwt = errorOf({ AUTH_MODE: "jwt" }).message;
    for (const v of ["AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE", "AUTH_JWKS_URL"]) expect(jwt).toContain(v);
    const ok = {
      AUTH_MODE: "jwt",
      AUTH_JWT_ISSUER: "https://idp/realms/a",
      AUTH_JWT_AUDIENCE: "llm-broker",
      AUTH_JWKS_URL: "https://idp/certs",
      ALLOW_DEV_DRIVERS: "true",
    };
    expect(loadSettings({ ...ok, LLM_BROKER_HOST: "0.0.0.0" }).authMode).toBe("jwt");
    expect(errorOf({ ...ok, AUTH_JWT_ALGORITHMS: "RS256,HS256" }).message).toContain("HS256");
    expect(errorOf({ ...ok, AUTH_JWT_ALGORITHMS: "none" }).message).toContain("AUTH_JWT_ALGORITHMS");
    expect(errorOf({ ...ok, AUTH_JWT_ISSUER: " , " }).message).toContain("AUTH_JWT_ISSUER");
    expect(errorOf({ ...ok, AUTH_JWKS_URL: "idp/certs" }).message).toContain("AUTH_JWKS_URL");
    expect(errorOf({ AUTH_MODE: "mtls" }).message).toContain("AUTH_TLS_CLIENT_CA_FILE");
  });

  it("DATABASE_URL: accepts file: and postgres URLs, rejects anything else", () => {
    for (const bad of ["mysql://x", "./data/x.db", "file:", "postgres://", "file::memory:"]) {
      expect(errorOf({ DATABASE_URL: bad }).message).toContain("DATABASE_URL");
    }
    expect(loadSettings({ DATABASE_URL: "postgresql://u@h:5432/db" }).databaseUrl).toBe("postgresql://u@h:5432/db");
    expect(loadSettings({ DATABASE_URL: "file:/tmp/x.db" }).databaseUrl).toBe("file:/tmp/x.db");
  });

  it("CORS_ORIGINS: rejects entries a browser Origin header can never equal", () => {
    for (const bad of ["*", "localhost:3000", "http://localhost:3000/", "https://a.example/app", "HTTP://A.example", "http://a.example:80", "null", "file:///x"]) {
      const err = errorOf({ CORS_ORIGINS: `https://ok.example,${bad}` });
      expect(err.message).toContain("CORS_ORIGINS");
      expect(err.message).toContain(bad);
    }
    expect(loadSettings({ CORS_ORIGINS: "https://app.example.com:8443,http://[::1]:3000" }).corsOrigins).toEqual([
      "https://app.example.com:8443",
      "http://[::1]:3000",
    ]);
  });
});

// Secret values the tests below put in the environment; no message or warning may contain them.
const KC_SECRET = "kc-secret-value-0123456789";
const ENTRA_SECRET = "entra-secret-value-0123456789";
const GSAP_TOKEN = "gsap-bearer-token-0123456789";
const DB_PASSWORD = "db-password-0123456789";

const JWT = { AUTH_JWKS_URL: "https://idp.example/certs", AUTH_JWT_ISSUER: "https://idp.example", AUTH_JWT_AUDIENCE: "llm-broker" };
const MTLS = { AUTH_TLS_CERT_FILE: "/tls/server.pem", AUTH_TLS_KEY_FILE: "/tls/server.key", AUTH_TLS_CLIENT_CA_FILE: "/tls/ca.pem" };
const KEYCLOAK = { KEYCLOAK_URL: "https://kc.example", KEYCLOAK_ADMIN_CLIENT_SECRET: KC_SECRET };
const ENTRA = { ENTRA_TENANT_ID: "tenant", ENTRA_CLIENT_ID: "client", ENTRA_CLIENT_SECRET: ENTRA_SECRET };
const GSAP = { GSAP_BROKER_URL: "https://gsap.example", GSAP_BEARER_TOKEN: GSAP_TOKEN };
const CHRONICLE = { CHRONICLE_WEBHOOK_URL: "https://chronicle.example/hook" };
/** Every real driver: jwt/mtls authentication starts without ALLOW_DEV_DRIVERS. */
const REAL = { ...KEYCLOAK, ...GSAP, ...CHRONICLE };

/** The variables a "… needs A, B" message names as missing. */
function missingIn(message: string): string[] {
  const m = message.match(/ needs ([A-Z0-9_, ]+)$/);
  if (!m) throw new Error(`no "needs …" at the end of: ${message}`);
  return m[1]!.split(", ");
}

describe("driver selection: auto picks the real driver when its settings are present, else the dev driver", () => {
  it("defaults every driver to auto, which with nothing configured is the dev driver", () => {
    const s = loadSettings({});
    expect([s.authMode, s.registrar, s.gsapDriver, s.auditDriver]).toEqual(["dev", "stub", "dev", "log"]);
  });

  it("trap: the prototype's .env (GSAP_BEARER_TOKEN + GSAP_BROKER_URL, no GSAP_DRIVER) uses the real GSAP", () => {
    const s = loadSettings({ GSAP_BROKER_URL: "http://gsap:8000", GSAP_BEARER_TOKEN: GSAP_TOKEN });
    expect(s.gsapDriver).toBe("http");
    expect(s.gsap.url).toBe("http://gsap:8000");
  });

  it("trap: CHRONICLE_WEBHOOK_URL alone audits to Chronicle, not to the log", () => {
    expect(loadSettings(CHRONICLE).auditDriver).toBe("chronicle");
    // And AUDIT_FAIL_CLOSED works with it, as an operator who set both would expect.
    expect(loadSettings({ ...CHRONICLE, AUDIT_FAIL_CLOSED: "true" }).auditFailClosed).toBe(true);
  });

  it("trap: ENTRA_TENANT_ID + ENTRA_CLIENT_ID without a secret is an error naming ENTRA_CLIENT_SECRET, not the stub", () => {
    const err = errorOf({ ENTRA_TENANT_ID: "tenant", ENTRA_CLIENT_ID: "client" });
    expect(err.message).toBe(
      "AGENT_REGISTRAR=auto selects entra because ENTRA_TENANT_ID, ENTRA_CLIENT_ID are set; entra also needs ENTRA_CLIENT_SECRET",
    );
  });

  it("trap: AUTH_JWKS_URL without AUTH_MODE is jwt (never header-trusting dev mode): partial is an error, complete is jwt", () => {
    expect(missingIn(errorOf({ AUTH_JWKS_URL: JWT.AUTH_JWKS_URL }).message)).toEqual(["AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"]);
    expect(loadSettings({ ...JWT, ...REAL }).authMode).toBe("jwt");
  });

  it("picks each real driver from its settings alone", () => {
    expect(loadSettings(KEYCLOAK).registrar).toBe("keycloak");
    expect(loadSettings(ENTRA).registrar).toBe("entra");
    expect(loadSettings({ ...MTLS, ...REAL }).authMode).toBe("mtls");
  });

  it("carries the resolved driver, never auto, whichever way it was chosen", () => {
    for (const env of [{}, { AUTH_MODE: "auto", AGENT_REGISTRAR: "auto", GSAP_DRIVER: "auto", AUDIT_DRIVER: "auto" }, { ...REAL, ...JWT }, ENTRA]) {
      const s = loadSettings(env);
      expect([s.authMode, s.registrar, s.gsapDriver, s.auditDriver]).not.toContain("auto");
    }
  });

  it("treats blank values as absent: they select nothing", () => {
    const s = loadSettings({ GSAP_BEARER_TOKEN: " ", KEYCLOAK_URL: "", CHRONICLE_WEBHOOK_URL: "  ", AUTH_JWKS_URL: "" });
    expect([s.authMode, s.registrar, s.gsapDriver, s.auditDriver]).toEqual(["dev", "stub", "dev", "log"]);
  });

  it("lets an explicit dev driver win over present settings, and warns that they are ignored", () => {
    const env = { GSAP_DRIVER: "dev", ...GSAP, AGENT_REGISTRAR: "stub", KEYCLOAK_URL: "https://kc.example" };
    const s = loadSettings(env);
    expect([s.gsapDriver, s.registrar]).toEqual(["dev", "stub"]);
    const warnings = settingsWarnings(s, env);
    expect(warnings).toContain("GSAP_BROKER_URL, GSAP_BEARER_TOKEN are set but ignored: GSAP_DRIVER=dev");
    expect(warnings).toContain("KEYCLOAK_URL is set but ignored: AGENT_REGISTRAR=stub");
  });

  it("with settings of both Keycloak and Entra (or jwt and mtls), auto refuses to guess", () => {
    const reg = errorOf({ KEYCLOAK_URL: "https://kc.example", ENTRA_TENANT_ID: "tenant" }).message;
    expect(reg).toBe(
      "AGENT_REGISTRAR=auto found settings of both keycloak (KEYCLOAK_URL) and entra (ENTRA_TENANT_ID); set AGENT_REGISTRAR to the one to use",
    );
    expect(loadSettings({ ...KEYCLOAK, ...ENTRA, AGENT_REGISTRAR: "entra" }).registrar).toBe("entra");
    const auth = errorOf({ AUTH_JWKS_URL: JWT.AUTH_JWKS_URL, AUTH_TLS_CERT_FILE: MTLS.AUTH_TLS_CERT_FILE }).message;
    expect(auth).toContain("AUTH_MODE=auto found settings of both jwt (AUTH_JWKS_URL) and mtls (AUTH_TLS_CERT_FILE)");
    expect(loadSettings({ ...JWT, ...MTLS, ...REAL, AUTH_MODE: "mtls" }).authMode).toBe("mtls");
  });
});

describe("a partial configuration is a start-up error naming exactly what is missing", () => {
  const cases: [string, Record<string, string>, string[]][] = [
    ["GSAP_BROKER_URL alone", { GSAP_BROKER_URL: "https://gsap.example" }, ["GSAP_BEARER_TOKEN"]],
    ["GSAP_BEARER_TOKEN alone", { GSAP_BEARER_TOKEN: GSAP_TOKEN }, ["GSAP_BROKER_URL"]],
    ["GSAP_DRIVER=http with the token only", { GSAP_DRIVER: "http", GSAP_BEARER_TOKEN: GSAP_TOKEN }, ["GSAP_BROKER_URL"]],
    ["KEYCLOAK_URL alone", { KEYCLOAK_URL: "https://kc.example" }, ["KEYCLOAK_ADMIN_CLIENT_SECRET"]],
    ["KEYCLOAK_ADMIN_CLIENT_SECRET alone", { KEYCLOAK_ADMIN_CLIENT_SECRET: KC_SECRET }, ["KEYCLOAK_URL"]],
    ["AGENT_REGISTRAR=keycloak with the secret only", { AGENT_REGISTRAR: "keycloak", KEYCLOAK_ADMIN_CLIENT_SECRET: KC_SECRET }, ["KEYCLOAK_URL"]],
    ["ENTRA_TENANT_ID + ENTRA_CLIENT_ID", { ENTRA_TENANT_ID: "t", ENTRA_CLIENT_ID: "c" }, ["ENTRA_CLIENT_SECRET"]],
    ["ENTRA_CLIENT_SECRET alone", { ENTRA_CLIENT_SECRET: ENTRA_SECRET }, ["ENTRA_TENANT_ID", "ENTRA_CLIENT_ID"]],
    ["AGENT_REGISTRAR=entra with the tenant only", { AGENT_REGISTRAR: "entra", ENTRA_TENANT_ID: "t" }, ["ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET"]],
    ["AUDIT_DRIVER=chronicle without a URL", { AUDIT_DRIVER: "chronicle" }, ["CHRONICLE_WEBHOOK_URL"]],
    ["AUTH_JWKS_URL alone", { AUTH_JWKS_URL: JWT.AUTH_JWKS_URL }, ["AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"]],
    ["AUTH_JWT_ISSUER + AUTH_JWT_AUDIENCE", { AUTH_JWT_ISSUER: JWT.AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE: "a" }, ["AUTH_JWKS_URL"]],
    ["AUTH_MODE=jwt alone", { AUTH_MODE: "jwt" }, ["AUTH_JWKS_URL", "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"]],
    ["AUTH_TLS_CERT_FILE alone", { AUTH_TLS_CERT_FILE: MTLS.AUTH_TLS_CERT_FILE }, ["AUTH_TLS_KEY_FILE", "AUTH_TLS_CLIENT_CA_FILE"]],
    ["AUTH_MODE=mtls with the key only", { AUTH_MODE: "mtls", AUTH_TLS_KEY_FILE: MTLS.AUTH_TLS_KEY_FILE }, ["AUTH_TLS_CERT_FILE", "AUTH_TLS_CLIENT_CA_FILE"]],
  ];
  it.each(cases)("%s", (_, env, missing) => {
    const err = errorOf(env);
    expect(missingIn(err.message)).toEqual(missing);
    // It also names the variable that chose the driver.
    expect(err.message).toMatch(/^(GSAP_DRIVER|AGENT_REGISTRAR|AUDIT_DRIVER|AUTH_MODE)=/);
    for (const secret of [KC_SECRET, ENTRA_SECRET, GSAP_TOKEN]) expect(err.message).not.toContain(secret);
  });
});

describe("real authentication refuses dev drivers unless ALLOW_DEV_DRIVERS=true", () => {
  it("refuses jwt with every dev driver, naming each", () => {
    expect(errorOf(JWT).message).toBe(
      "AUTH_MODE=jwt refuses dev drivers: GSAP_DRIVER=dev, AGENT_REGISTRAR=stub, AUDIT_DRIVER=log; configure the real drivers (see .env.example) or set ALLOW_DEV_DRIVERS=true",
    );
  });

  it("names only the dev drivers in use, and refuses an explicit dev driver just as one resolved by auto", () => {
    const only = errorOf({ ...MTLS, ...GSAP, ...CHRONICLE }).message;
    expect(only).toMatch(/^AUTH_MODE=mtls refuses dev drivers: AGENT_REGISTRAR=stub;/);
    expect(errorOf({ ...JWT, ...REAL, AUDIT_DRIVER: "log" }).message).toMatch(/^AUTH_MODE=jwt refuses dev drivers: AUDIT_DRIVER=log;/);
  });

  it("starts jwt and mtls with every real driver without ALLOW_DEV_DRIVERS, and warns about no dev driver", () => {
    for (const auth of [JWT, MTLS]) {
      const env = { ...auth, ...REAL };
      expect(settingsWarnings(loadSettings(env), env)).toEqual([]);
    }
  });

  it("ALLOW_DEV_DRIVERS=true starts them, and every dev driver in use is named in a warning", () => {
    const env = { ...JWT, ALLOW_DEV_DRIVERS: "true" };
    const s = loadSettings(env);
    expect(s.allowDevDrivers).toBe(true);
    expect(settingsWarnings(s, env)).toEqual([
      "dev driver in use: GSAP_DRIVER=dev (delegator contexts are not checked at GSAP: every delegator holds CAP_MUTATE, delegated contexts are invented locally)",
      "dev driver in use: AGENT_REGISTRAR=stub (agents get no identity in an identity provider)",
      "dev driver in use: AUDIT_DRIVER=log (lifecycle events reach the service log only, not Chronicle)",
    ]);
    expect(errorOf({ ...JWT, ALLOW_DEV_DRIVERS: "yes" }).message).toContain("ALLOW_DEV_DRIVERS");
  });

  it("in dev authentication the dev drivers start, each named in a warning", () => {
    const env = { ...CHRONICLE };
    const warnings = settingsWarnings(loadSettings(env), env);
    expect(warnings.map((w) => w.match(/^dev driver in use: (\S+)/)?.[1])).toEqual(["GSAP_DRIVER=dev", "AGENT_REGISTRAR=stub"]);
  });
});

describe("settingsWarnings: unknown variables with the broker's prefixes", () => {
  const warn = (env: Record<string, string>) => settingsWarnings(loadSettings(env), env).filter((w) => !w.startsWith("dev driver"));

  it("warns about a typo and suggests the close known name", () => {
    expect(warn({ LLM_BROKER_GRPC_PORT: "9000" })).toEqual([
      "LLM_BROKER_GRPC_PORT is not a setting of the broker and is ignored; did you mean LLM_BROKER_PORT?",
    ]);
    expect(warn({ GSAP_BEARER_TOKN: GSAP_TOKEN })).toEqual([
      "GSAP_BEARER_TOKN is not a setting of the broker and is ignored; did you mean GSAP_BEARER_TOKEN?",
    ]);
    expect(warn({ AUTH_JWKS: "https://idp.example/certs" })[0]).toContain("did you mean AUTH_JWKS_URL?");
  });

  it("warns without a suggestion when nothing is close, one line per variable, sorted", () => {
    expect(warn({ WATCH_EVERYTHING: "1", AUDIT_ZZZZZZZZZZZZZZZZZ: "x" })).toEqual([
      "AUDIT_ZZZZZZZZZZZZZZZZZ is not a setting of the broker and is ignored",
      "WATCH_EVERYTHING is not a setting of the broker and is ignored",
    ]);
  });

  it("ignores variables outside its prefixes, lower-case names and HTTP_PROXY", () => {
    expect(warn({ PATH: "/bin", HOME: "/root", NODE_ENV: "production", http_proxy: "x", HTTP_PROXY: "http://proxy:3128", LLM_BROKER_PORT: "9000" })).toEqual([]);
  });

  it("never prints a value, only names", () => {
    const env = { GSAP_BEARER_TOKN: GSAP_TOKEN, KEYCLOAK_SECRET: KC_SECRET, ENTRA_CLIENT_SECRETT: ENTRA_SECRET };
    const all = settingsWarnings(loadSettings(env), env).join("\n");
    for (const secret of [KC_SECRET, ENTRA_SECRET, GSAP_TOKEN]) expect(all).not.toContain(secret);
  });
});

describe("no secret is printed", () => {
  it("redactDatabaseUrl hides a PostgreSQL password and keeps user, host and database", () => {
    expect(redactDatabaseUrl(`postgres://broker:${DB_PASSWORD}@db.example:5432/llm_broker`)).toBe("postgres://broker:***@db.example:5432/llm_broker");
    expect(redactDatabaseUrl("postgresql://broker:p%40ss%2Fw@db/x?sslmode=require")).toBe("postgresql://broker:***@db/x?sslmode=require");
    expect(redactDatabaseUrl(`postgres://broker@db/x?password=${DB_PASSWORD}`)).toBe("postgres://broker@db/x?password=***");
    expect(redactDatabaseUrl("postgres://broker@db:5432/x")).toBe("postgres://broker@db:5432/x");
    expect(redactDatabaseUrl("file:./data/llm-broker.db")).toBe("file:./data/llm-broker.db");
    // Unparsable (an unencoded "/" in the password): everything between the user and the last "@" goes.
    expect(redactDatabaseUrl("postgres://u:a/b@c@host/db")).not.toContain("a/b");
  });

  it("redactSecrets removes every secret value of the environment from a text", () => {
    const env = { ...KEYCLOAK, ...ENTRA, ...GSAP, DATABASE_URL: `postgres://u:${encodeURIComponent("p@ss word")}@h/db` };
    const text = `a ${KC_SECRET} b ${ENTRA_SECRET} c ${GSAP_TOKEN} d p@ss word e p%40ss%20word`;
    expect(redactSecrets(text, env)).toBe("a *** b *** c *** d *** e ***");
    expect(redactSecrets("nothing here", {})).toBe("nothing here");
  });

  it("no SettingsError message carries a secret value or the database password", () => {
    const db = `postgres://broker:${DB_PASSWORD}@db.example/x`;
    const bad: Record<string, string>[] = [
      { KEYCLOAK_ADMIN_CLIENT_SECRET: KC_SECRET },
      { ENTRA_CLIENT_SECRET: ENTRA_SECRET, ENTRA_TENANT_ID: "t" },
      { GSAP_BEARER_TOKEN: GSAP_TOKEN },
      { ...GSAP, GSAP_BROKER_URL: `https://user:${GSAP_TOKEN}@gsap` + " x" },
      { ...KEYCLOAK, KEYCLOAK_URL: `kc://admin:${KC_SECRET}@kc` },
      { ...KEYCLOAK, ...ENTRA },
      { ...JWT, ...GSAP, ...KEYCLOAK },
      { DATABASE_URL: db, LLM_BROKER_PORT: "x" },
      { DATABASE_URL: `mysql://broker:${DB_PASSWORD}@db.example/x` },
      { DATABASE_URL: db, LLM_BROKER_HOST: "0.0.0.0" },
    ];
    for (const env of bad) {
      const message = errorOf(env).message;
      for (const secret of [KC_SECRET, ENTRA_SECRET, GSAP_TOKEN, DB_PASSWORD]) expect(message).not.toContain(secret);
    }
  });
});
