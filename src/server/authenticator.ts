/** Chooses the authenticator from AUTH_MODE. */
import type { Settings } from "../config/settings.js";
import { SettingsError } from "../config/settings.js";
import { createJwtAuthenticator } from "./jwt-authenticator.js";
import { type Authenticator, devAuthenticator } from "./principal.js";

/** Builds the authenticator the settings select. */
export function createAuthenticator(settings: Settings): Authenticator {
  switch (settings.authMode) {
    case "dev":
      return devAuthenticator;
    case "jwt":
      return createJwtAuthenticator(settings.auth);
    case "mtls":
      throw new SettingsError("AUTH_MODE=mtls is not available in this build yet");
  }
}
