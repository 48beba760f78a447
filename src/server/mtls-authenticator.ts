/**
 * AUTH_MODE=mtls: the caller is the client certificate of the TLS connection,
 * which the listeners have already verified against AUTH_TLS_CLIENT_CA_FILE.
 * A delegator is named by a DID in a URI subject alternative name; a service
 * peer (the GSAP broker) by its subject CN. Request headers never name the
 * caller in this mode.
 */
import { BrokerError } from "../domain/index.js";
import type { Principal } from "../domain/index.js";
import { type Authenticator, DID_PATTERN, type PeerInfo } from "./principal.js";

export interface MtlsAuthenticatorOptions {
  /** Peer identities (a DID or a CN) that act as admin. By default, none. */
  admins?: string[];
}

// Printable, no control characters; long enough for any sensible CN (RFC 5280 caps it at 64).
const CN_PATTERN = /^[^\x00-\x1f\x7f]{1,256}$/;

function unauthenticated(reason: string, message: string): BrokerError {
  return new BrokerError("UNAUTHENTICATED", reason, message);
}

/**
 * The entries of node:tls's `subjectaltname` ("DNS:a, URI:b, …"). Node quotes a
 * value containing a separator as a JSON string (`URI:"x, URI:y"`), so one
 * entry can never be made to read as two.
 */
export function subjectAltNames(san: string): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(":", i);
    if (colon < 0) break;
    const type = san.slice(i, colon);
    let value: string;
    let end: number;
    if (san[colon + 1] === '"') {
      // A JSON string literal: find its closing quote, skipping escapes.
      let j = colon + 2;
      while (j < san.length && san[j] !== '"') j += san[j] === "\\" ? 2 : 1;
      try {
        value = JSON.parse(san.slice(colon + 1, j + 1)) as string;
      } catch {
        return out; // malformed: stop rather than guess
      }
      end = j + 1;
    } else {
      const sep = san.indexOf(", ", colon + 1);
      end = sep < 0 ? san.length : sep;
      value = san.slice(colon + 1, end);
    }
    out.push({ type, value });
    i = san.startsWith(", ", end) ? end + 2 : san.length;
  }
  return out;
}

/** The identity a verified certificate names: the first DID URI SAN, else the single subject CN. */
function identityOf(certificate: NonNullable<PeerInfo["certificate"]>): string {
  const did = subjectAltNames(certificate.subjectaltname ?? "").find((e) => e.type === "URI" && DID_PATTERN.test(e.value));
  if (did) return did.value;
  const cn = certificate.subject?.CN;
  if (Array.isArray(cn)) throw unauthenticated("CERTIFICATE_IDENTITY_AMBIGUOUS", "the client certificate has several subject CNs");
  if (cn === undefined || !CN_PATTERN.test(cn)) {
    throw unauthenticated("CERTIFICATE_IDENTITY_MISSING", "the client certificate names no DID (URI SAN) and no subject CN");
  }
  return cn;
}

/** Creates the mTLS authenticator. */
export function createMtlsAuthenticator(options: MtlsAuthenticatorOptions = {}): Authenticator {
  const admins = new Set(options.admins ?? []);
  return (_headers, peer): Principal => {
    // The listeners refuse unverified peers during the handshake; this is the second lock.
    if (!peer?.authorized || !peer.certificate) {
      throw unauthenticated("CERTIFICATE_REQUIRED", "a client certificate issued by the broker's client CA is required");
    }
    const identity = identityOf(peer.certificate);
    const admin = admins.has(identity);
    if (DID_PATTERN.test(identity)) return { did: identity, admin };
    return { did: "", admin, clientId: identity };
  };
}
