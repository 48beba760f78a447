/** The web port answers CORS for configured origins only, with the headers Connect and gRPC-Web need. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestBroker, startTestBroker } from "../helpers/broker.js";

describe("CORS on the web port", () => {
  let t: TestBroker;
  let base: string;
  beforeAll(async () => {
    t = await startTestBroker({ env: { CORS_ORIGINS: "https://dash.example.com" } });
    base = `http://127.0.0.1:${t.broker.webPort}/llmbroker.v1.DelegationService/ListAgents`;
  });
  afterAll(async () => {
    await t?.close();
  });

  const preflight = (origin: string) =>
    fetch(base, {
      method: "OPTIONS",
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,connect-protocol-version,x-delegator-did",
      },
    });

  it("answers a preflight from an allowed origin with the Connect and gRPC-Web headers", async () => {
    const res = await preflight("https://dash.example.com");
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://dash.example.com");
    const allowed = res.headers.get("access-control-allow-headers")!.toLowerCase();
    for (const h of ["content-type", "connect-protocol-version", "x-grpc-web", "x-delegator-did"]) expect(allowed).toContain(h);
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
  });

  it("refuses a preflight from any other origin and never answers with a wildcard", async () => {
    const res = await preflight("https://evil.example.com");
    expect(res.status).toBe(403);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("exposes the Connect response headers to an allowed origin on a real call, and none to others", async () => {
    const call = (origin: string) =>
      fetch(base, { method: "POST", headers: { Origin: origin, "content-type": "application/json" }, body: "{}" });
    const ok = await call("https://dash.example.com");
    expect(ok.status).toBe(200);
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://dash.example.com");
    expect(ok.headers.get("access-control-expose-headers")!.toLowerCase()).toContain("grpc-status");
    const other = await call("https://evil.example.com");
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });
});
