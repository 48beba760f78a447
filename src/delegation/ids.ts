/** Identifiers: time-ordered, so keyset pagination by id lists oldest first. */
import { randomBytes } from "node:crypto";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** A ULID (48-bit ms time + 80 random bits, Crockford base32). */
export function ulid(now: number = Date.now()): string {
  // A fractional clock would index CROCKFORD with a fraction (yielding "undefined" in the
  // id), and a time outside 48 bits cannot be encoded in 10 characters.
  if (!Number.isFinite(now) || now < 0 || now >= 2 ** 48) throw new RangeError(`ulid time out of range: ${now}`);
  let time = "";
  let t = Math.floor(now);
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomBytes(16);
  let rand = "";
  for (let i = 0; i < 16; i++) rand += CROCKFORD[bytes[i]! % 32];
  return time + rand;
}

/** A new delegation id, e.g. `del_01JD3…`. */
export function newDelegationId(now?: number): string {
  return `del_${ulid(now)}`;
}

/** A new ceremony id, e.g. `cer_01JD3…`. */
export function newCeremonyId(now?: number): string {
  return `cer_${ulid(now)}`;
}
