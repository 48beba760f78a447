/**
 * Builds the registrar settings select. loadSettings has resolved `auto`
 * (Keycloak or Entra when their settings are present, the stub when none
 * are) and refused a partial configuration, so the choice here is concrete.
 */
import { httpOptionsFrom } from "../clients/http/http-client.js";
import type { RegistrarDriver, Settings } from "../config/settings.js";
import type { Logger } from "../logging.js";
import { createEntraRegistrar } from "./entra/entra-registrar.js";
import { createKeycloakRegistrar } from "./keycloak/keycloak-registrar.js";
import type { AgentRegistrar } from "./registrar.js";
import { createStubRegistrar } from "./stub/stub-registrar.js";

/** Which driver `settings` select (loadSettings resolved `auto`). */
export function registrarDriver(settings: Settings): RegistrarDriver {
  return settings.registrar;
}

/** Builds the registrar the settings select. */
export function createRegistrar(settings: Settings, log: Logger): AgentRegistrar {
  const httpOptions = httpOptionsFrom(settings.http);
  switch (settings.registrar) {
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
