/**
 * Who the caller is, as request headers: a bearer access token
 * (AUTH_MODE=jwt) or, for AUTH_MODE=dev, the delegator DID the broker trusts
 * from the `x-delegator-did` header. Shared by the Node and the browser client.
 */
import type { Interceptor } from "@connectrpc/connect";

/** The header AUTH_MODE=dev takes the caller's DID from. */
export const DEV_DID_HEADER = "x-delegator-did";

export interface BrokerCredentials {
  /** An access token, sent as `Authorization: Bearer <token>`. By default, none. */
  token?: string;
  /** A delegator DID for AUTH_MODE=dev, sent as `x-delegator-did`. By default, none. */
  did?: string;
}

/** An interceptor that adds the credentials' headers to every call; a header the caller set itself wins. */
export function credentialsInterceptor(credentials: BrokerCredentials): Interceptor {
  const token = credentials.token?.trim() ?? "";
  const did = credentials.did?.trim() ?? "";
  // A token or DID with a line break would be refused by fetch and http alike; say why here instead.
  if (/[\r\n]/.test(token) || /[\r\n]/.test(did)) throw new TypeError("credentials must not contain line breaks");
  return (next) => (req) => {
    if (token !== "" && !req.header.has("authorization")) req.header.set("authorization", `Bearer ${token}`);
    if (did !== "" && !req.header.has(DEV_DID_HEADER)) req.header.set(DEV_DID_HEADER, did);
    return next(req);
  };
}
