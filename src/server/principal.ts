/**
 * Who is calling. Authentication puts the Principal into the handler
 * context; handlers read it with principalOf(ctx). This file holds the only
 * authentication the broker has so far: the dev-mode header.
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { BrokerError } from "../delegation/errors.js";
import type { Principal } from "../delegation/model.js";

export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "authenticated caller" });

/** The header that names the delegator in dev mode (the prototype's X-Delegator-DID). */
export const DEV_DID_HEADER = "x-delegator-did";

const DID = /^did:[a-z0-9]+:[A-Za-z0-9._:%\/-]{1,500}$/;

/** Establishes the caller from request headers. */
export type Authenticator = (headers: Headers) => Principal;

/**
 * AUTH_MODE=dev: the caller is whoever `x-delegator-did` names; without it, the
 * caller is the local dev operator, who may act on every delegation.
 */
export const devAuthenticator: Authenticator = (headers) => {
  const did = headers.get(DEV_DID_HEADER);
  if (did === null || did === "") return { did: "", admin: true };
  if (!DID.test(did)) {
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
