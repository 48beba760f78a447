import { describe, expect, it } from "vitest";
import { newDelegationId, ulid } from "../../src/delegation/ids.js";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** Reads the 48-bit millisecond time back out of a ULID. */
function timeOf(id: string): number {
  return [...id.slice(0, 10)].reduce((t, c) => t * 32 + CROCKFORD.indexOf(c), 0);
}

describe("ids", () => {
  it("formats delegation ids as del_ and 26 Crockford base32 characters", () => {
    for (let i = 0; i < 200; i++) {
      const id = newDelegationId();
      expect(id).toMatch(/^del_[0-9A-Z]{26}$/);
      expect(id).toMatch(/^del_[0-9A-HJKMNP-TV-Z]{26}$/); // no I, L, O or U
    }
  });

  it("encodes the given time in the first 10 characters", () => {
    const t = 1_700_000_000_123;
    expect(timeOf(ulid(t))).toBe(t);
    expect(timeOf(newDelegationId(t).slice(4))).toBe(t);
    expect(ulid(0).slice(0, 10)).toBe("0000000000");
    expect(ulid(2 ** 48 - 1).slice(0, 10)).toBe("7ZZZZZZZZZ");
  });

  it("defaults to the current time", () => {
    const before = Date.now();
    const t = timeOf(ulid());
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now());
  });

  it("sorts ids created at increasing times in time order", () => {
    const times = [0, 1, 31, 32, 1023, 1024, 2 ** 40, 1_600_000_000_000, 1_700_000_000_000, 1_700_000_000_001, 2 ** 48 - 1];
    const ids = times.map((t) => newDelegationId(t));
    expect([...ids].sort()).toEqual(ids);
    // In reverse creation order too, so the check does not pass by accident of insertion order.
    expect([...ids].reverse().sort()).toEqual(ids);
  });

  it("makes distinct ids within the same millisecond", () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newDelegationId(1_700_000_000_000)));
    expect(ids.size).toBe(1000);
  });

  it("floors a fractional time and refuses one that cannot be encoded", () => {
    expect(ulid(1_700_000_000_123.9)).toMatch(/^[0-9A-Z]{26}$/);
    expect(timeOf(ulid(1_700_000_000_123.9))).toBe(1_700_000_000_123);
    for (const bad of [-1, 2 ** 48, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => ulid(bad)).toThrow(RangeError);
  });
});
