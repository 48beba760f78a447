/**
 * Chooses the registrar from settings, as the prototype did: `auto` picks
 * Entra if it is configured, then Keycloak, then the stub. A driver asked for
 * by name must be configured (loadSettings checks), never silently replaced
 * by the stub.
 */
import { httpOptionsFrom } from "../clients/http/http-client.js";
import type { Settings } from "../config/settings.js";
import type { Logger } from "../logging.js";
import { createEntraRegistrar } from "./entra/entra-registrar.js";
import { createKeycloakRegistrar } from "./keycloak/keycloak-registrar.js";
import type { AgentRegistrar } from "./registrar.js";
import { createStubRegistrar } from "./stub/stub-registrar.js";

/** Which driver `settings` select, after resolving `auto`. */
export function registrarDriver(settings: Settings): "keycloak" | "entra" | "stub" {
  if (settings.registrar !== "auto") return settings.registrar;
  const { entra, keycloak } = settings;
  if (entra.tenantId !== "" && entra.clientId !== "" && entra.clientSecret !== "") return "entra";
  if (keycloak.adminClientSecret !== "") return "keycloak";
  return "stub";
}

/** Builds the registrar the settings select. */
export function createRegistrar(settings: Settings, log: Logger): AgentRegistrar {
  const httpOptions = httpOptionsFrom(settings.http);
  switch (registrarDriver(settings)) {
    case "stub":
      return createStubRegistrar();
    case "keycloak":
      return createKeycloakRegistrar({ ...settings.keycloak, httpOptions, log });
    case "entra": {
      const { ca, ...rest } = httpOptions;
      return createEntraRegistrar({ ...settings.entra, httpOptions: rest, ...(ca ? { ca } : {}), log });
    }
  }
}
