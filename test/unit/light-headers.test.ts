/** LightHeaders answers as the fetch Headers class does, for every operation the broker and Connect use. */
import { describe, expect, it } from "vitest";
import { LightHeaders } from "../../src/server/light-headers.js";

function both(init: Record<string, string>): [Headers, Headers] {
  return [new Headers(init), new LightHeaders(init)];
}

describe("LightHeaders", () => {
  it("reads, writes and iterates like Headers (case-insensitive names, sorted iteration, append joins)", () => {
    for (const h of both({ "x-delegator-did": "did:web:a", authorization: "Bearer t", "content-type": "application/grpc" })) {
      h.set("X-Request-Id", "r1");
      h.append("x-extra", "a");
      h.append("X-Extra", "b");
      h.delete("content-type");
      expect(h.get("AUTHORIZATION")).toBe("Bearer t");
      expect(h.get("x-request-id")).toBe("r1");
      expect(h.get("missing")).toBeNull();
      expect(h.has("X-EXTRA")).toBe(true);
      expect(h.has("content-type")).toBe(false);
    }
    const [real, light] = both({ b: "2", a: "1" });
    for (const h of [real, light]) {
      h.set("C", "3");
      h.append("a", "0");
    }
    expect([...light]).toEqual([...real]);
    expect([...light.keys()]).toEqual([...real.keys()]);
    expect([...light.values()]).toEqual([...real.values()]);
    const seen: string[] = [];
    light.forEach((v, k) => seen.push(`${k}=${v}`));
    expect(seen).toEqual(["a=1, 0", "b=2", "c=3"]);
  });
});
