import { describe, expect, it } from "vitest";
import { SettingsError, loadSettings } from "../../src/config/settings.js";

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
      registrar: "auto",
      gsapDriver: "dev",
      auditDriver: "log",
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
      leaseTtlMs: 1200,
      eventRetentionMs: 168 * HOUR,
      idempotencyTtlMs: 24 * HOUR,
      createInflightMs: 120_000,
      logLevel: "info",
      keycloak: { url: "http://localhost:8080", realm: "substrate", adminClientId: "llm-broker-admin", adminClientSecret: "" },
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
        url: "http://localhost:8000",
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
    const configured = {
      KEYCLOAK_ADMIN_CLIENT_SECRET: "kc-secret",
      ENTRA_TENANT_ID: "t",
      ENTRA_CLIENT_ID: "c",
      ENTRA_CLIENT_SECRET: "s",
    };
    for (const r of ["auto", "keycloak", "entra", "stub"]) {
      expect(loadSettings({ AGENT_REGISTRAR: r, ...configured }).registrar).toBe(r);
    }
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
    expect(errorOf({ AGENT_REGISTRAR: "keycloak" }).message).toContain("KEYCLOAK_ADMIN_CLIENT_SECRET");
    const entra = errorOf({ AGENT_REGISTRAR: "entra", ENTRA_TENANT_ID: "t" }).message;
    expect(entra).toContain("ENTRA_CLIENT_ID");
    expect(entra).toContain("ENTRA_CLIENT_SECRET");
    expect(entra).not.toContain("ENTRA_TENANT_ID");
    expect(errorOf({ ENTRA_AGENT_BLUEPRINT_ID: "bp" }).message).toContain("ENTRA_SPONSOR_ID");
    expect(errorOf({ GSAP_DRIVER: "http" }).message).toContain("GSAP_BEARER_TOKEN");
    expect(errorOf({ AUDIT_DRIVER: "chronicle" }).message).toContain("CHRONICLE_WEBHOOK_URL");
    expect(errorOf({ AUDIT_DRIVER: "chronicle", CHRONICLE_WEBHOOK_URL: "ftp://x" }).message).toContain("CHRONICLE_WEBHOOK_URL");
    expect(errorOf({ AUDIT_FAIL_CLOSED: "true" }).message).toContain("AUDIT_DRIVER=chronicle");
    expect(errorOf({ AUDIT_FAIL_CLOSED: "yes" }).message).toContain("AUDIT_FAIL_CLOSED");
    expect(errorOf({ KEYCLOAK_URL: "keycloak:8080" }).message).toContain("KEYCLOAK_URL");
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
    const ok = { AUTH_MODE: "jwt", AUTH_JWT_ISSUER: "https://idp/realms/a", AUTH_JWT_AUDIENCE: "llm-broker", AUTH_JWKS_URL: "https://idp/certs" };
    expect(loadSettings({ ...ok, LLM_BROKER_HOST: "0.0.0.0" }).authMode).toBe("jwt");
    expect(errorOf({ ...ok, AUTH_JWT_ALGORITHMS: "RS256,HS256" }).message).toContain("HS256");
    expect(errorOf({ ...ok, AUTH_JWT_ALGORITHMS: "none" }).message).toContain("AUTH_JWT_ALGORITHMS");
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
