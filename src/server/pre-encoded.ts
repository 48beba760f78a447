/**
 * An answer that carries its own encoding, for a transport that can send it
 * as it is (the grpc-js adapter); any other transport encodes the answer's
 * message as usual. See encoded-delegation.ts.
 */
export const PRE_ENCODED = Symbol("pre-encoded response");

export interface PreEncoded {
  [PRE_ENCODED]: () => Uint8Array;
}

/** The encoding of an answer that carries one, else undefined. */
export function preEncodedOf(m: unknown): Uint8Array | undefined {
  const encode = (m as Partial<PreEncoded> | null)?.[PRE_ENCODED];
  return typeof encode === "function" ? encode() : undefined;
}
