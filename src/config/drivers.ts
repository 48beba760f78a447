/**
 * Which driver serves each external system, and how callers are
 * authenticated, by one rule. AUTH_MODE, AGENT_REGISTRAR, GSAP_DRIVER and
 * AUDIT_DRIVER are `auto` by default: a real driver is picked when any of
 * its required settings is set, and then all of them are required; the dev
 * driver only when none is. A partial configuration stops the start, never
 * falls back to a dev driver; a driver named explicitly needs its settings
 * too. With jwt or mtls authentication the dev drivers are refused unless
 * ALLOW_DEV_DRIVERS=true.
 */
import type { SettingKey } from "./keys.js";
import { type Env, isSet, oneOf } from "./parse.js";
import type { AuditDriver, AuthMode, GsapDriver, RegistrarDriver, Settings } from "./settings.js";
import { SettingsError } from "./settings-error.js";

interface RealDriver<D extends string> {
  name: D;
  /** All needed; any of them set makes `auto` pick this driver. */
  required: readonly SettingKey[];
  /** Optional settings without a default; set while another driver is used, they are warned about. */
  options?: readonly SettingKey[];
}

interface DriverChoice<D extends string> {
  /** The variable that chooses. */
  key: SettingKey;
  dev: D;
  real: readonly RealDriver<D>[];
}

const AUTH: DriverChoice<AuthMode> = {
  key: "AUTH_MODE",
  dev: "dev",
  real: [
    { name: "jwt", required: ["AUTH_JWKS_URL", "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"] },
    { name: "mtls", required: ["AUTH_TLS_CERT_FILE", "AUTH_TLS_KEY_FILE", "AUTH_TLS_CLIENT_CA_FILE"], options: ["AUTH_MTLS_ADMINS"] },
  ],
};

const REGISTRAR: DriverChoice<RegistrarDriver> = {
  key: "AGENT_REGISTRAR",
  dev: "stub",
  real: [
    { name: "keycloak", required: ["KEYCLOAK_URL", "KEYCLOAK_ADMIN_CLIENT_SECRET"] },
    {
      name: "entra",
      required: ["ENTRA_TENANT_ID", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET"],
      options: ["ENTRA_AGENT_BLUEPRINT_ID", "ENTRA_SPONSOR_ID"],
    },
  ],
};

const GSAP: DriverChoice<GsapDriver> = {
  key: "GSAP_DRIVER",
  dev: "dev",
  real: [{ name: "http", required: ["GSAP_BROKER_URL", "GSAP_BEARER_TOKEN"] }],
};

const AUDIT: DriverChoice<AuditDriver> = {
  key: "AUDIT_DRIVER",
  dev: "log",
  real: [{ name: "chronicle", required: ["CHRONICLE_WEBHOOK_URL"] }],
};

export type ResolvedDrivers = Pick<Settings, "authMode" | "registrar" | "gsapDriver" | "auditDriver">;

const CHOICES: { [K in keyof ResolvedDrivers]: DriverChoice<ResolvedDrivers[K]> } = {
  authMode: AUTH,
  registrar: REGISTRAR,
  gsapDriver: GSAP,
  auditDriver: AUDIT,
};

/** The driver of each system, `auto` resolved; throws for a partial or ambiguous configuration. */
export function resolveDrivers(env: Env): ResolvedDrivers {
  return {
    authMode: resolve(env, AUTH),
    registrar: resolve(env, REGISTRAR),
    gsapDriver: resolve(env, GSAP),
    auditDriver: resolve(env, AUDIT),
  };
}

function resolve<D extends string>(env: Env, c: DriverChoice<D>): D {
  const requested = oneOf<D | "auto">(env, c.key, "auto", ["auto", c.dev, ...c.real.map((r) => r.name)]);
  if (requested === c.dev) return c.dev;
  if (requested !== "auto") {
    const driver = c.real.find((r) => r.name === requested)!;
    const missing = driver.required.filter((k) => !isSet(env, k));
    if (missing.length > 0) throw new SettingsError(`${c.key}=${requested} needs ${missing.join(", ")}`);
    return driver.name;
  }
  const found = c.real
    .map((driver) => ({ driver, set: driver.required.filter((k) => isSet(env, k)) }))
    .filter((f) => f.set.length > 0);
  if (found.length > 1) {
    const which = found.map((f) => `${f.driver.name} (${f.set.join(", ")})`).join(" and ");
    throw new SettingsError(`${c.key}=auto found settings of both ${which}; set ${c.key} to the one to use`);
  }
  const only = found[0];
  if (only === undefined) return c.dev;
  const missing = only.driver.required.filter((k) => !isSet(env, k));
  if (missing.length > 0) {
    const verb = only.set.length === 1 ? "is" : "are";
    throw new SettingsError(
      `${c.key}=auto selects ${only.driver.name} because ${only.set.join(", ")} ${verb} set; ${only.driver.name} also needs ${missing.join(", ")}`,
    );
  }
  return only.driver.name;
}

/** A dev driver in use, and what it does not do. */
export interface DevDriver {
  /** The effective choice, e.g. "GSAP_DRIVER=dev". */
  setting: string;
  note: string;
}

/** The dev drivers `s` uses (dev authentication is not a driver: it is shown in the banner). */
export function devDriversInUse(s: Settings): DevDriver[] {
  const out: DevDriver[] = [];
  if (s.gsapDriver === "dev") {
    out.push({
      setting: "GSAP_DRIVER=dev",
      note: `delegator contexts are not checked at GSAP: every delegator holds ${s.devDelegatorCeiling}, delegated contexts are invented locally`,
    });
  }
  if (s.registrar === "stub") {
    out.push({ setting: "AGENT_REGISTRAR=stub", note: "agents get no identity in an identity provider" });
  }
  if (s.auditDriver === "log") {
    out.push({ setting: "AUDIT_DRIVER=log", note: "lifecycle events reach the service log only, not Chronicle" });
  }
  return out;
}

/** Settings of a driver that is not in use (possible only when another is named explicitly). */
export interface UnusedSettings {
  keys: SettingKey[];
  /** The effective choice that leaves them unused, e.g. "AGENT_REGISTRAR=entra". */
  setting: string;
}

/** The set variables of drivers `s` does not use. */
export function unusedDriverSettings(s: Settings, env: Env): UnusedSettings[] {
  const out: UnusedSettings[] = [];
  for (const field of Object.keys(CHOICES) as (keyof ResolvedDrivers)[]) {
    const c: DriverChoice<string> = CHOICES[field];
    for (const r of c.real) {
      if (r.name === s[field]) continue;
      const keys = [...r.required, ...(r.options ?? [])].filter((k) => isSet(env, k));
      if (keys.length > 0) out.push({ keys, setting: `${c.key}=${s[field]}` });
    }
  }
  return out;
}

const ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

/** What the resolved drivers need beyond presence: formats, pairs, and no dev driver behind real authentication. */
export function checkDrivers(s: Settings): void {
  if (s.entra.agentBlueprintId !== "" && s.entra.sponsorId === "") {
    throw new SettingsError("ENTRA_AGENT_BLUEPRINT_ID needs ENTRA_SPONSOR_ID (agent identities must have a sponsor)");
  }
  if (s.auditDriver === "chronicle" && !/^https?:\/\/.+/.test(s.chronicle.webhookUrl)) {
    throw new SettingsError("CHRONICLE_WEBHOOK_URL must be an http(s) URL");
  }
  if (s.authMode === "dev" && !isLoopback(s.host)) {
    throw new SettingsError(
      `AUTH_MODE=dev trusts a header for the caller's identity and listens only on loopback; LLM_BROKER_HOST=${s.host} needs AUTH_MODE=jwt or mtls`,
    );
  }
  if (s.authMode === "jwt") {
    if (s.auth.issuers.length === 0) throw new SettingsError("AUTH_JWT_ISSUER must name at least one issuer");
    if (!/^https?:\/\/.+/.test(s.auth.jwksUrl)) throw new SettingsError("AUTH_JWKS_URL must be an http(s) URL");
    const bad = s.auth.algorithms.filter((a) => !ASYMMETRIC.includes(a));
    if (bad.length > 0 || s.auth.algorithms.length === 0) {
      throw new SettingsError(`AUTH_JWT_ALGORITHMS may list only asymmetric algorithms (${ASYMMETRIC.join(", ")}); got ${bad.join(", ") || "none"}`);
    }
  }
  if (s.auditFailClosed && s.auditDriver !== "chronicle") {
    throw new SettingsError(`AUDIT_FAIL_CLOSED=true needs AUDIT_DRIVER=chronicle (set CHRONICLE_WEBHOOK_URL), not ${s.auditDriver}`);
  }
  const dev = devDriversInUse(s);
  if (s.authMode !== "dev" && dev.length > 0 && !s.allowDevDrivers) {
    throw new SettingsError(
      `AUTH_MODE=${s.authMode} refuses dev drivers: ${dev.map((d) => d.setting).join(", ")}; configure the real drivers (see .env.example) or set ALLOW_DEV_DRIVERS=true`,
    );
  }
}

/** Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
