/**
 * ListAgents page tokens: where the next page starts, the filters the
 * listing was made with, and how many delegations matched them when its
 * first page was read (so later pages need not count again).
 *
 * A token is base64url JSON `{v: 1, a, s, d, t, c}`:
 *
 * - `a` the last delegation id of the page before (the keyset cursor),
 * - `s`, `d` the state and effective delegator filter it was issued for
 *   (a token used with other filters is refused),
 * - `t` the listing's total_size as counted on its first page, and `c` a
 *   check over all of it, so an edited token (a changed count, cursor or
 *   filter) is refused. The check is a SHA-256 digest, not a signature
 *   keyed with a secret: nothing in the token is trusted beyond the answer
 *   to whoever holds it (the filters are checked against the caller, the
 *   cursor is only a position within them, the count is only echoed back).
 *
 * Tokens issued before the count was carried have no `t` and no `c`; they
 * are accepted as before and the listing counts once more. The version
 * stays 1 and the new fields are optional, so a broker of the previous
 * version (during a rolling upgrade) still accepts these tokens: it ignores
 * `t` and `c` and counts, as it always did.
 */
import { createHash } from "node:crypto";
import { invalidArgument } from "../domain/index.js";
import * as v from "./validate.js";

/** The filters a token is bound to: the state and the effective delegator DID ("" for all). */
export interface PageFilter {
  s: string;
  d: string;
}

/** Where a listing continues. */
export interface PagePosition {
  afterId: string;
  /** The total counted on the listing's first page; undefined for a token that carries none (count again). */
  total: number | undefined;
}

/** total_size is an int32 on the wire. */
const MAX_TOTAL = 2 ** 31 - 1;

const NOT_ISSUED = "is not a token this service issued";

function check(afterId: string, filter: PageFilter, total: number): string {
  return createHash("sha256")
    .update(`llmbroker ListAgents page token\n${JSON.stringify([afterId, filter.s, filter.d, total])}`)
    .digest("base64url")
    .slice(0, 22);
}

/** The token of the page after `afterId`, carrying the listing's total. */
export function encodePageToken(afterId: string, filter: PageFilter, total: number): string {
  const t = Math.min(Math.max(0, Math.trunc(total)), MAX_TOTAL);
  return Buffer.from(JSON.stringify({ v: 1, a: afterId, s: filter.s, d: filter.d, t, c: check(afterId, filter, t) })).toString("base64url");
}

/** The position a token names; INVALID_ARGUMENT (page_token) for anything this service did not issue, or issued for other filters. */
export function decodePageToken(token: string, filter: PageFilter): PagePosition {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument("page_token", NOT_ISSUED);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw invalidArgument("page_token", NOT_ISSUED);
  const p = parsed as { v?: unknown; a?: unknown; s?: unknown; d?: unknown; t?: unknown; c?: unknown };
  if (p.v !== 1 || typeof p.a !== "string" || !v.isDelegationId(p.a) || typeof p.s !== "string" || typeof p.d !== "string") {
    throw invalidArgument("page_token", NOT_ISSUED);
  }
  let total: number | undefined;
  if (p.t !== undefined || p.c !== undefined) {
    const t = p.t;
    if (typeof t !== "number" || !Number.isInteger(t) || t < 0 || t > MAX_TOTAL || typeof p.c !== "string") {
      throw invalidArgument("page_token", NOT_ISSUED);
    }
    if (p.c !== check(p.a, { s: p.s, d: p.d }, t)) throw invalidArgument("page_token", NOT_ISSUED);
    total = t;
  }
  if (p.s !== filter.s || p.d !== filter.d) {
    throw invalidArgument("page_token", "was issued for different filters");
  }
  return { afterId: p.a, total };
}
