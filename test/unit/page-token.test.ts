/**
 * ListAgents page tokens (src/delegation/page-token.ts): they carry the
 * listing's count, refuse edits, and stay readable by the previous version
 * (which ignores the count), so a rolling upgrade does not break a listing.
 */
import { describe, expect, it } from "vitest";
import { BrokerError } from "../../src/domain/index.js";
import { decodePageToken, encodePageToken } from "../../src/delegation/page-token.js";

const ID = "del_01JD3Q4Z8X9Y0ABCDEFGHJKMNP";
const OTHER = "del_01JD3Q4Z8X9Y0ABCDEFGHJKMNQ";
const F = { s: "ACTIVE", d: "did:web:example.com/user/alice" };

const json = (token: string) => JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Record<string, unknown>;
const tokenOf = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

function refusal(token: string, filter = F): { code: string; field: string | undefined; message: string } {
  try {
    decodePageToken(token, filter);
  } catch (e) {
    expect(e).toBeInstanceOf(BrokerError);
    const b = e as BrokerError;
    return { code: b.code, field: b.field, message: b.message };
  }
  throw new Error("expected the token to be refused");
}

/** The decoder of the version before tokens carried a count, as it was released. */
function previousDecode(token: string, filter: { s: string; d: string }): string {
  const p = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { v?: unknown; a?: unknown; s?: unknown; d?: unknown };
  if (p === null || typeof p !== "object" || p.v !== 1 || typeof p.a !== "string" || !/^del_[0-9A-Z]{26}$/.test(p.a)) throw new Error("not issued");
  if (p.s !== filter.s || p.d !== filter.d) throw new Error("different filters");
  return p.a;
}

describe("ListAgents page tokens", () => {
  it("carry the cursor and the listing's count", () => {
    expect(decodePageToken(encodePageToken(ID, F, 1234), F)).toEqual({ afterId: ID, total: 1234 });
    expect(decodePageToken(encodePageToken(ID, F, 0), F)).toEqual({ afterId: ID, total: 0 });
    // total_size is an int32 on the wire.
    expect(decodePageToken(encodePageToken(ID, F, 2 ** 40), F).total).toBe(2 ** 31 - 1);
  });

  it("read a token of the previous format as one without a count", () => {
    expect(decodePageToken(tokenOf({ v: 1, a: ID, ...F }), F)).toEqual({ afterId: ID, total: undefined });
  });

  it("are still read by the previous version, which ignores the count", () => {
    expect(previousDecode(encodePageToken(ID, F, 99), F)).toBe(ID);
  });

  it("refuse every edit with INVALID_ARGUMENT naming page_token", () => {
    const good = json(encodePageToken(ID, F, 50));
    const edits: Record<string, unknown>[] = [
      { ...good, t: 51 },
      { ...good, t: 2 ** 31 },
      { ...good, t: 1.5 },
      { ...good, t: null },
      { ...good, a: OTHER },
      { ...good, a: "del_short" },
      { ...good, s: "REVOKED" },
      { ...good, d: "" },
      { ...good, c: undefined },
      { ...good, t: undefined },
      { ...good, c: 7 },
      { ...good, v: 2 },
    ];
    for (const edit of edits) {
      expect(refusal(tokenOf(edit)), JSON.stringify(edit)).toMatchObject({ code: "INVALID_ARGUMENT", field: "page_token" });
    }
    expect(refusal("")).toMatchObject({ code: "INVALID_ARGUMENT", field: "page_token" });
    expect(refusal("bm90IGpzb24")).toMatchObject({ code: "INVALID_ARGUMENT", field: "page_token" });
    expect(refusal(tokenOf(null))).toMatchObject({ code: "INVALID_ARGUMENT", field: "page_token" });
  });

  it("are bound to their filters", () => {
    const token = encodePageToken(ID, F, 5);
    expect(refusal(token, { s: "REVOKED", d: F.d })).toMatchObject({ field: "page_token", message: expect.stringContaining("different filters") });
    expect(refusal(token, { s: F.s, d: "" })).toMatchObject({ field: "page_token", message: expect.stringContaining("different filters") });
  });
});
