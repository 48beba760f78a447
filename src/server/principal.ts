/**
 * Who is calling. The authentication interceptor runs the configured
 * Authenticator and puts the Principal into the handler context; handlers
 * read it with principalOf(ctx).
 *
 * - dev: the prototype's `x-delegator-did` header (loopback only);
 * - jwt: a bearer access token verified against the issuer's JWKS (jwt-authenticator.ts);
 * - mtls: the client certificate of the TLS connection (mtls-authenticator.ts).
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { BrokerError } from "../domain/index.js";
import type { Principal } from "../domain/index.js";

export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "authenticated caller" });

/** The TLS peer of the connection, when there is one (set by the transports). */
export interface PeerInfo {
  /** The client certificate, as node:tls returns it (getPeerCertificate). */
  certificate?: { subject?: { CN?: string | string[] }; subjectaltname?: string; fingerprint256?: string } | undefined;
  /** Whether the TLS layer verified it against the configured client CA. */
  authorized: boolean;
}

export const peerKey = createContextKey<PeerInfo | undefined>(undefined, { description: "TLS peer" });

/**
 * The connection a stream rides on, where one connection multiplexes many
 * (the gRPC port's HTTP/2; set for streaming calls only). Undefined on
 * HTTP/1.1, where a stream has its connection to itself.
 */
export const connectionKey = createContextKey<string | undefined>(undefined, { description: "multiplexed connection" });

/** The header that names the delegator in dev mode (the prototype's X-Delegator-DID). */
export const DEV_DID_HEADER = "x-delegator-did";

export const DID_PATTERN = /^did:[a-z0-9]+:[A-Za-z0-9._:%\/-]{1,500}$/;

/** Establishes the caller from request headers and the TLS peer. Throws UNAUTHENTICATED. */
export type Authenticator = (headers: Headers, peer: PeerInfo | undefined) => Principal | Promise<Principal>;

/**
 * AUTH_MODE=dev: the caller is whoever `x-delegator-did` names; without it, the
 * caller is the local dev operator, who may act on every delegation.
 */
export const devAuthenticator: Authenticator = (headers) => {
  const did = headers.get(DEV_DID_HEADER);
  if (did === null || did === "") return { did: "", admin: true };
  if (!DID_PATTERN.test(did)) {
    throw new BrokerError("UNAUTHENTICATED", "MALFORMED_IDENTITY", `${DEV_DID_HEADER} is not a DID (did:method:id)`);
  }
  return { did, admin: false };
};

/** The caller of the current RPC. */
export function principalOf(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (!p) throw new BrokerError("UNAUTHENTICATED", "NOT_AUTHENTICATED", "the caller is not authenticated");
  return p;
}
