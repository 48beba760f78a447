/**
 * Builds the authenticator AUTH_MODE selects. loadSettings has resolved
 * `auto` (jwt when an AUTH_JWT_* or AUTH_JWKS_URL setting is present, mtls
 * when an AUTH_TLS_* file is, dev otherwise).
 */
import type { Settings } from "../config/settings.js";
import { createJwtAuthenticator } from "./jwt-authenticator.js";
import { createMtlsAuthenticator } from "./mtls-authenticator.js";
import { type Authenticator, devAuthenticator } from "./principal.js";

/** Builds the authenticator the settings select. */
export function createAuthenticator(settings: Settings): Authenticator {
  switch (settings.authMode) {
    case "dev":
      return devAuthenticator;
    case "jwt":
      return createJwtAuthenticator(settings.auth);
    case "mtls":
      return createMtlsAuthenticator({ admins: settings.auth.mtlsAdmins });
  }
}
