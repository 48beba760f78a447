/**
 * AUTH_MODE=jwt: bearer access tokens (OIDC, from Keycloak or Entra) verified
 * with jose against the issuer's JWKS: fixed issuer(s) and audience, an
 * allow-list of asymmetric algorithms (so `alg: none` and HS256-with-the-
 * public-key never verify), expiry required, small clock skew. Keys are cached
 * and re-fetched when a token names an unknown key id (rotation).
 *
 * The caller's DID comes from a configured claim, never from a header; the
 * admin role from a configured roles claim; an agent is recognised by the
 * client its token was issued to (azp, client_id or appid).
 */
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from "jose";
import { BrokerError, UpstreamError } from "../domain/index.js";
import type { Principal } from "../domain/index.js";
import { type Authenticator, DID_PATTERN } from "./principal.js";

export interface JwtAuthenticatorOptions {
  issuers: string[];
  audience: string;
  jwksUrl: string;
  algorithms: string[];
  clockSkewSeconds: number;
  /** Dotted path of the DID claim. By default, "did". */
  didClaim: string;
  /** Dotted path of the roles claim (an array, or a space-separated string). */
  rolesClaim: string;
  adminRole: string;
  /** How long a JWKS fetch may take. By default, 5 s. */
  jwksTimeoutMs?: number;
  /** How long after a fetch a token with an unknown kid must wait to re-fetch the set. By default, 30 s. */
  jwksCooldownMs?: number;
}

const MAX_TOKEN_LENGTH = 16 * 1024;
// The scheme name is case-insensitive (RFC 9110 §11.1).
const BEARER = /^Bearer ([A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*\.[A-Za-z0-9\-_]*)$/i;

function claimAt(payload: JWTPayload, path: string): unknown {
  let v: unknown = payload;
  for (const part of path.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function unauthenticated(reason: string, message: string): BrokerError {
  return new BrokerError("UNAUTHENTICATED", reason, message);
}

/**
 * Whether verification failed for want of the issuer's keys rather than for
 * the token: jose throws JWKSTimeout for a slow issuer, fetch's TypeError for
 * a refused connection, a plain JOSEError (ERR_JOSE_GENERIC) for a non-200 or
 * non-JSON answer, and JWKSInvalid for a body that is no key set.
 */
function keysUnavailable(err: unknown): boolean {
  return (
    err instanceof joseErrors.JWKSTimeout ||
    err instanceof joseErrors.JWKSInvalid ||
    (err instanceof joseErrors.JOSEError && err.code === "ERR_JOSE_GENERIC") ||
    (err instanceof Error && err.name === "TypeError")
  );
}

/** Creates the JWT authenticator. */
export function createJwtAuthenticator(options: JwtAuthenticatorOptions): Authenticator {
  const jwks = createRemoteJWKSet(new URL(options.jwksUrl), {
    timeoutDuration: options.jwksTimeoutMs ?? 5_000,
    // A token with an unknown kid re-fetches the set, at most every 30 s.
    cooldownDuration: options.jwksCooldownMs ?? 30_000,
    cacheMaxAge: 10 * 60_000,
  });
  return async (headers): Promise<Principal> => {
    const header = headers.get("authorization");
    if (header === null || header === "") throw unauthenticated("TOKEN_MISSING", "a bearer access token is required");
    if (header.length > MAX_TOKEN_LENGTH) throw unauthenticated("TOKEN_MALFORMED", "the bearer token is too long");
    const m = BEARER.exec(header);
    if (!m) throw unauthenticated("TOKEN_MALFORMED", "the Authorization header is not 'Bearer <jwt>'");
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(m[1]!, jwks, {
        issuer: options.issuers,
        audience: options.audience,
        algorithms: options.algorithms,
        clockTolerance: options.clockSkewSeconds,
        requiredClaims: ["exp"],
      }));
    } catch (err) {
      if (keysUnavailable(err)) {
        // The issuer's keys could not be fetched: not the caller's fault.
        throw new UpstreamError("jwks", "unreachable", "the token issuer's keys cannot be fetched now", { reason: "JWKS_UNAVAILABLE", cause: err });
      }
      if (err instanceof joseErrors.JWTExpired) throw unauthenticated("TOKEN_EXPIRED", "the token has expired");
      // Never echo the token or the library's detail (it may quote claims).
      throw unauthenticated("TOKEN_INVALID", "the token is not valid for this service");
    }
    const did = claimAt(payload, options.didClaim);
    if (did !== undefined && (typeof did !== "string" || (did !== "" && !DID_PATTERN.test(did)))) {
      throw unauthenticated("TOKEN_INVALID", `the token's ${options.didClaim} claim is not a DID`);
    }
    const rawRoles = claimAt(payload, options.rolesClaim);
    const roles = Array.isArray(rawRoles) ? rawRoles.filter((r) => typeof r === "string") : typeof rawRoles === "string" ? rawRoles.split(" ") : [];
    const client = [payload.azp, payload.client_id, payload.appid].find((c) => typeof c === "string" && c !== "") as string | undefined;
    const principal: Principal = { did: (did as string | undefined) ?? "", admin: roles.includes(options.adminRole), clientId: client ?? "" };
    if (principal.did === "" && !principal.admin && principal.clientId === "") {
      throw unauthenticated("TOKEN_INVALID", "the token names no caller (no DID, role or client)");
    }
    return principal;
  };
}
