/**
 * Chooses the registrar from settings. This release has only the stub, so
 * `auto` selects it; `keycloak` and `entra` asked for by name are a start-up
 * error, never a silent fallback to the stub.
 */
import type { Settings } from "../config/settings.js";
import { SettingsError } from "../config/settings.js";
import type { Logger } from "../logging.js";
import type { AgentRegistrar } from "./registrar.js";
import { createStubRegistrar } from "./stub/stub-registrar.js";

/** Builds the registrar the settings select. */
export function createRegistrar(settings: Settings, _log: Logger): AgentRegistrar {
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
