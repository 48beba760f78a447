/**
 * Chooses the registrar from settings. `auto` picks Entra if configured, then
 * Keycloak, then the stub; a driver asked for by name that cannot be built is
 * a start-up error, never a silent fallback.
 */
import type { Settings } from "../config/settings.js";
import { SettingsError } from "../config/settings.js";
import type { AgentRegistrar } from "./registrar.js";
import { createStubRegistrar } from "./stub/stub-registrar.js";

/** Builds the registrar the settings select. */
export function createRegistrar(settings: Pick<Settings, "registrar">): AgentRegistrar {
  switch (settings.registrar) {
    case "stub":
    case "auto":
      return createStubRegistrar();
    case "keycloak":
    case "entra":
      throw new SettingsError(
        `AGENT_REGISTRAR=${settings.registrar} is not available in this build; use stub or auto`,
      );
  }
}
