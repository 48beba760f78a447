/**
 * Health with standard tools: grpc.health.v1 Check, List and Watch on the
 * gRPC port and /livez, /readyz on the web port, judged from a real store
 * (its schema taken away and given back) and from the background work's
 * recorded failures; unauthenticated; ending with the shutdown.
 */
import { readFileSync } from "node:fs";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type HealthCheckResponse,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as S,
  HealthListRequestSchema,
  HealthListResponseSchema,
} from "../../src/gen/grpc/health/v1/health_pb.js";
import { parseDatabaseUrl } from "../../src/store/database-url.js";
import { JwksFake } from "../fakes/jwks-fake.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";
import { DRIVERS } from "../helpers/databases.js";
import { eventually } from "../helpers/eventually.js";
import { flakyAudit, flakyGsap, flakyRegistrar } from "../helpers/fakes.js";

const SERVICE = "llmbroker.v1.DelegationService";
const VERSION = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** A grpc-js health client, as grpc-health-probe or a Kubernetes gRPC probe calls it. */
class HealthClient {
  private readonly raw: grpc.Client;
  constructor(port: number) {
    this.raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }

  check(service: string): Promise<S> {
    return new Promise((resolve, reject) =>
      this.raw.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (m: { service: string }) => Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, m))),
        (b: Buffer) => fromBinary(HealthCheckResponseSchema, b),
        { service },
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (err, res) => (err ? reject(err) : resolve(res!.status)),
      ),
    );
  }

  list(): Promise<Record<string, S>> {
    return new Promise((resolve, reject) =>
      this.raw.makeUnaryRequest(
        "/grpc.health.v1.Health/List",
        () => Buffer.from(toBinary(HealthListRequestSchema, create(HealthListRequestSchema))),
        (b: Buffer) => fromBinary(HealthListResponseSchema, b),
        {},
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (err, res) => (err ? reject(err) : resolve(Object.fromEntries(Object.entries(res!.statuses).map(([k, v]) => [k, v.status])))),
      ),
    );
  }

  /** Opens Watch: every status received, and how the stream ended. */
  watch(service: string) {
    const seen: S[] = [];
    const call = this.raw.makeServerStreamRequest(
      "/grpc.health.v1.Health/Watch",
      (m: { service: string }) => Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, m))),
      (b: Buffer) => fromBinary(HealthCheckResponseSchema, b),
      { service },
      new grpc.Metadata(),
      {},
    );
    const ended = new Promise<grpc.ServiceError>((resolve) => call.on("error", resolve));
    call.on("data", (m: HealthCheckResponse) => seen.push(m.status));
    return { seen, ended, cancel: () => call.cancel() };
  }

  close(): void {
    this.raw.close();
  }
}

const codeOf = (p: Promise<unknown>) => p.then(
  () => "ok",
  (e: grpc.ServiceError) => grpc.status[e.code],
);

interface ProbeBody {
  status: string;
  version: string;
  startTime: string;
  uptimeSeconds: number;
  checkTime: string | null;
  dependencies: Record<"store" | "idp" | "gsap" | "audit", { status: string; driver: string; pending?: number | null; failClosed?: boolean; refusingCreates?: boolean }> | null;
  outbox: { pending: number; oldestPendingTime: string | null; rejected: number } | null;
  reasons?: string[];
}

async function probe(port: number, path: string, method = "GET") {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: text ? (JSON.parse(text) as ProbeBody) : undefined };
}

/** Takes the store's schema away (the broker_meta table, as an un-migrated database lacks it) and gives it back. */
function schemaSwitch(url: string) {
  const target = parseDatabaseUrl(url);
  const rename = async (from: string, to: string) => {
    const sql = `ALTER TABLE "${from}" RENAME TO "${to}"`;
    if (target.provider === "sqlite") {
      const db = new Database(target.path);
      db.pragma("busy_timeout = 5000");
      try {
        db.exec(sql);
      } finally {
        db.close();
      }
    } else {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    }
  };
  return { remove: () => rename("broker_meta", "broker_meta_away"), restore: () => rename("broker_meta_away", "broker_meta") };
}

describe.each(DRIVERS)("grpc.health.v1 and the HTTP probes (%s)", (driver) => {
  let t: TestBroker;
  let health: HealthClient;
  const reg = flakyRegistrar();
  const gsap = flakyGsap();

  beforeAll(async () => {
    t = await startTestBroker({ driver, overrides: { registrar: reg.registrar, gsap: gsap.gsap } });
    health = new HealthClient(t.broker.grpcPort);
  });
  afterAll(async () => {
    health?.close();
    await t?.close();
  });

  it("answers SERVING for the server, the DelegationService and each dependency, and NOT_FOUND for an unknown service", async () => {
    for (const name of ["", SERVICE, `${SERVICE}/store`, `${SERVICE}/idp`, `${SERVICE}/gsap`, `${SERVICE}/audit`]) {
      expect(await health.check(name), name).toBe(S.SERVING);
    }
    expect(await codeOf(health.check("no.such.Service"))).toBe("NOT_FOUND");
    expect(await codeOf(health.check(`${SERVICE}/chronicle`))).toBe("NOT_FOUND");
    expect(await health.list()).toEqual({
      "": S.SERVING,
      [SERVICE]: S.SERVING,
      [`${SERVICE}/store`]: S.SERVING,
      [`${SERVICE}/idp`]: S.SERVING,
      [`${SERVICE}/gsap`]: S.SERVING,
      [`${SERVICE}/audit`]: S.SERVING,
    });
  });

  it("/readyz and /livez answer GET with the version, uptime, every dependency and the outbox backlog, and HEAD with the same headers and no body", async () => {
    const ready = await probe(t.broker.webPort, "/readyz");
    expect(ready.status).toBe(200);
    expect(ready.headers.get("content-type")).toBe("application/json");
    expect(ready.headers.get("cache-control")).toBe("no-store");
    expect(ready.body).toMatchObject({
      status: "ready",
      version: VERSION,
      dependencies: {
        store: { status: "ok", driver },
        idp: { status: "ok", driver: "stub", pending: 0 },
        gsap: { status: "ok", driver: "dev", pending: 0 },
        audit: { status: "ok", driver: "log", failClosed: false, refusingCreates: false },
      },
      outbox: { rejected: 0 },
    });
    expect(ready.body!.reasons).toBeUndefined();
    expect(typeof ready.body!.outbox!.pending).toBe("number");
    expect(ready.body!.uptimeSeconds).toBeGreaterThanOrEqual(0);
    expect(Date.parse(ready.body!.startTime)).toBeLessThanOrEqual(Date.parse(ready.body!.checkTime!));

    const live = await probe(t.broker.webPort, "/livez");
    expect(live.status).toBe(200);
    expect(live.body).toMatchObject({ status: "alive", version: VERSION, dependencies: { store: { status: "ok" } } });

    for (const path of ["/readyz", "/livez"]) {
      const head = await probe(t.broker.webPort, path, "HEAD");
      expect(head.status, path).toBe(200);
      expect(head.text, path).toBe("");
      expect(Number(head.headers.get("content-length")), path).toBeGreaterThan(20);
      expect((await probe(t.broker.webPort, path, "POST")).status, path).toBe(405);
    }
    // /healthz is kept as it was.
    const healthz = await probe(t.broker.webPort, "/healthz");
    expect(healthz.status).toBe(200);
    expect(healthz.body).toMatchObject({ status: "ok", driver });
  });

  it("reports GSAP and the IdP NOT_SERVING while their consequence workers fail, and SERVING again after", async () => {
    const c = await t.grpc.unary("createDelegation", { delegatorAcId: "ac-health" }, as(ALICE));
    gsap.state.failRevoke = true;
    reg.state.failDelete = true;
    try {
      await t.grpc.unary("revokeDelegation", { delegationId: c.delegation!.delegationId }, as(ALICE));
      await t.broker.follower.catchUp();
      await t.broker.background.gsapRevoke.runOnce().catch(() => undefined);
      await t.broker.background.idpCleanup.runOnce().catch(() => undefined);
      await eventually("gsap and idp NOT_SERVING", async () => (await health.check(`${SERVICE}/gsap`)) === S.NOT_SERVING && (await health.check(`${SERVICE}/idp`)) === S.NOT_SERVING, 15_000);
      // The broker itself still serves (revokes and reads work), and so /readyz is 200, naming the failing ones.
      expect(await health.check("")).toBe(S.SERVING);
      expect(await health.check(`${SERVICE}/audit`)).toBe(S.SERVING);
      const ready = await probe(t.broker.webPort, "/readyz");
      expect(ready.status).toBe(200);
      expect(ready.body!.dependencies).toMatchObject({ gsap: { status: "failing", pending: 1 }, idp: { status: "failing", pending: 1 }, store: { status: "ok" } });
    } finally {
      gsap.state.failRevoke = false;
      reg.state.failDelete = false;
    }
    t.advanceClock(10 * 60_000); // the retries come due
    await t.settle();
    await eventually("gsap and idp SERVING", async () => (await health.check(`${SERVICE}/gsap`)) === S.SERVING && (await health.check(`${SERVICE}/idp`)) === S.SERVING);
    expect((await probe(t.broker.webPort, "/readyz")).body!.dependencies).toMatchObject({ gsap: { status: "ok", pending: 0 }, idp: { status: "ok", pending: 0 } });
  });

  it("is NOT_SERVING and /readyz 503 while the store lacks its schema, /livez stays 200, and Watch follows SERVING → NOT_SERVING → SERVING", async () => {
    const schema = schemaSwitch(t.db.url);
    const watch = health.watch("");
    const watchIdp = health.watch(`${SERVICE}/idp`);
    await eventually("the first status", () => watch.seen.length === 1 && watchIdp.seen.length === 1);
    expect(watch.seen).toEqual([S.SERVING]);
    await schema.remove();
    try {
      await eventually("Watch sees NOT_SERVING", () => watch.seen.length === 2);
      expect(watch.seen).toEqual([S.SERVING, S.NOT_SERVING]);
      expect(await health.check("")).toBe(S.NOT_SERVING);
      expect(await health.check(SERVICE)).toBe(S.NOT_SERVING);
      expect(await health.check(`${SERVICE}/store`)).toBe(S.NOT_SERVING);
      // What the background work recorded is in the store too: the broker cannot tell.
      expect(await health.check(`${SERVICE}/idp`)).toBe(S.UNKNOWN);
      await eventually("Watch of idp sees UNKNOWN", () => watchIdp.seen.at(-1) === S.UNKNOWN);

      const ready = await probe(t.broker.webPort, "/readyz");
      expect(ready.status).toBe(503);
      expect(ready.body).toMatchObject({
        status: "not_ready",
        version: VERSION,
        dependencies: { store: { status: "failing" }, idp: { status: "unknown", pending: null }, audit: { status: "unknown" } },
        outbox: null,
        reasons: ["store: unreachable or not migrated"],
      });
      // Nothing sensitive: no SQL error text, no database address.
      expect(ready.text).not.toMatch(/broker_meta|relation|no such table|127\.0\.0\.1|lpb_test|postgres:\/\//);
      const head = await probe(t.broker.webPort, "/readyz", "HEAD");
      expect([head.status, head.text]).toEqual([503, ""]);

      const live = await probe(t.broker.webPort, "/livez");
      expect(live.status).toBe(200);
      expect(live.body!.status).toBe("alive");
    } finally {
      await schema.restore();
    }
    await eventually("Watch sees SERVING again", () => watch.seen.length === 3);
    expect(watch.seen).toEqual([S.SERVING, S.NOT_SERVING, S.SERVING]);
    expect(await health.check("")).toBe(S.SERVING);
    expect((await probe(t.broker.webPort, "/readyz")).status).toBe(200);
    watch.cancel();
    watchIdp.cancel();
    expect((await watch.ended).code).toBe(grpc.status.CANCELLED);
  });

  it("Watch of an unknown service answers SERVICE_UNKNOWN and stays open; at shutdown every watch is told NOT_SERVING and ends with UNAVAILABLE", async () => {
    const unknown = health.watch("no.such.Service");
    const server = health.watch("");
    const audit = health.watch(`${SERVICE}/audit`);
    await eventually("the first statuses", () => unknown.seen.length === 1 && server.seen.length === 1 && audit.seen.length === 1);
    expect(unknown.seen).toEqual([S.SERVICE_UNKNOWN]);
    expect(server.seen).toEqual([S.SERVING]);
    await t.broker.stop();
    const [u, s, a] = await Promise.all([unknown.ended, server.ended, audit.ended]);
    expect([u.code, s.code, a.code]).toEqual([grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE]);
    expect(s.details).toBe("the server is shutting down");
    expect(unknown.seen).toEqual([S.SERVICE_UNKNOWN]);
    expect(server.seen).toEqual([S.SERVING, S.NOT_SERVING]);
    expect(audit.seen).toEqual([S.SERVING, S.NOT_SERVING]);
  });
});

describe("readiness with fail-closed audit", () => {
  let t: TestBroker;
  let health: HealthClient;
  const audit = flakyAudit();

  beforeAll(async () => {
    t = await startTestBroker({
      env: { AUDIT_DRIVER: "chronicle", CHRONICLE_WEBHOOK_URL: "http://127.0.0.1:9/unused", AUDIT_FAIL_CLOSED: "true", AUDIT_FAIL_CLOSED_TIMEOUT_SECONDS: "1" },
      overrides: { audit: audit.sink },
    });
    health = new HealthClient(t.broker.grpcPort);
  });
  afterAll(async () => {
    health?.close();
    await t?.close();
  });

  it("/readyz is 503 while delivery fails and creates are refused, the audit dependency NOT_SERVING; both recover with Chronicle", async () => {
    const before = await probe(t.broker.webPort, "/readyz");
    expect(before.status).toBe(200);
    expect(before.body!.dependencies!.audit).toEqual({ status: "ok", driver: "chronicle", failClosed: true, refusingCreates: false });

    audit.state.down = true;
    try {
      const err = (await t.grpc.unary("createDelegation", { delegatorAcId: "ac-fc" }, as(ALICE)).catch((e: unknown) => e)) as grpc.ServiceError;
      expect(err.code).toBe(grpc.status.UNAVAILABLE); // refused: what cannot be audited is not granted
      await eventually("/readyz 503", async () => (await probe(t.broker.webPort, "/readyz")).status === 503);
      const ready = await probe(t.broker.webPort, "/readyz");
      expect(ready.body).toMatchObject({
        status: "not_ready",
        dependencies: { store: { status: "ok" }, audit: { status: "failing", driver: "chronicle", failClosed: true, refusingCreates: true } },
        reasons: ["audit: fail-closed and delivery is failing, so creates are refused"],
      });
      expect(ready.body!.outbox!.pending).toBeGreaterThanOrEqual(1);
      expect(Date.parse(ready.body!.outbox!.oldestPendingTime!)).not.toBeNaN();
      expect(ready.text).not.toContain("ECONNREFUSED");
      expect((await probe(t.broker.webPort, "/livez")).status).toBe(200);
      expect(await health.check(`${SERVICE}/audit`)).toBe(S.NOT_SERVING);
      // The gRPC server as a whole still serves: revokes and reads are never refused.
      expect(await health.check("")).toBe(S.SERVING);
    } finally {
      audit.state.down = false;
    }
    await t.broker.background.outboxLoop.runOnce();
    await eventually("/readyz 200 again", async () => (await probe(t.broker.webPort, "/readyz")).status === 200);
    expect(await health.check(`${SERVICE}/audit`)).toBe(S.SERVING);
    expect((await probe(t.broker.webPort, "/readyz")).body).toMatchObject({ status: "ready", outbox: { pending: 0 } });
  });
});

describe("health needs no credentials (AUTH_MODE=jwt)", () => {
  let issuer: JwksFake;
  let t: TestBroker;
  let health: HealthClient;

  beforeAll(async () => {
    issuer = await JwksFake.start();
    t = await startTestBroker({ env: { ...issuer.env(), ALLOW_DEV_DRIVERS: "true" } });
    health = new HealthClient(t.broker.grpcPort);
  });
  afterAll(async () => {
    health?.close();
    await t?.close();
    await issuer?.close();
  });

  it("answers Check, List and the probes without a token while the DelegationService refuses the same caller", async () => {
    expect(await codeOf(t.grpc.unary("listAgents", {}))).toBe("UNAUTHENTICATED");
    expect(await health.check("")).toBe(S.SERVING);
    expect((await health.list())[SERVICE]).toBe(S.SERVING);
    expect((await probe(t.broker.webPort, "/readyz")).status).toBe(200);
    expect((await probe(t.broker.webPort, "/livez")).status).toBe(200);
  });
});
